"""Tests of cpmc_lib.segmentation: the network, training with resume, evaluation, the two stages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from cpmc_lib import engine, models, pseudo, segmentation
from cpmc_lib.diagnostics import LabelPathologyMeter
from cpmc_lib.engine import load_checkpoint
from cpmc_lib.io import save_mask_png
from cpmc_lib.metrics import miou
from cpmc_lib.store import StageMissingError


def tiny_net(num_classes: int = 3) -> models.SegNet:
    return models.SegNet(
        "resnet18",
        num_classes,
        output_stride=8,
        layers=(1, 1),
        channels=(8, 16),
        head_channels=8,
        atrous_rates=(1, 2, 3),
    )


def test_output_size_equals_input_size():
    net = tiny_net().eval()
    for h, w in [(64, 64), (50, 71)]:
        assert net(torch.zeros(2, 3, h, w)).shape == (2, 3, h, w)


def test_head_of_width_256_is_torchvision_deeplabhead():
    assert isinstance(models.deeplab_head(32, 5, (6, 12, 18), width=256), DeepLabHead)
    head = models.deeplab_head(32, 5, (2, 4), width=16)
    assert head(torch.zeros(2, 32, 9, 9)).shape == (2, 5, 9, 9)


def test_predict_fuses_scales_and_flip_into_probabilities():
    torch.manual_seed(0)
    net = tiny_net().eval()
    img = torch.randn(2, 3, 40, 48)
    single = segmentation.predict(net, img)
    torch.testing.assert_close(single, net(img).softmax(1))
    fused = segmentation.predict(net, img, scales=(0.75, 1.0), flip=True)
    assert fused.shape == (2, 3, 40, 48)
    torch.testing.assert_close(fused.sum(1), torch.ones(2, 40, 48))
    # Flip fusion of a flipped input is the flip of the fusion.
    torch.testing.assert_close(
        segmentation.predict(net, img.flip(-1), flip=True), segmentation.predict(net, img, flip=True).flip(-1)
    )


def test_loss_decreases_and_ignores_255():
    torch.manual_seed(0)
    net = tiny_net()
    mask = torch.zeros(4, 32, 32, dtype=torch.long)
    for i in range(4):  # one square object per image, at different places
        mask[i, 4 + 4 * i : 20 + 4 * i, 2 + 3 * i : 18 + 3 * i] = 1 + i % 2
    img = 0.2 * torch.randn(4, 3, 32, 32)
    img[:, 0] += (mask == 1).float()
    img[:, 2] += (mask == 2).float()
    mask[:, :2] = 255
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(20):
        loss = segmentation.segmentation_loss(net(img), mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    # Ignored pixels do not count: the loss is the mean over the labelled pixels only.
    logits = net(img)
    per_pixel = torch.nn.functional.cross_entropy(logits, mask.clamp(max=2), reduction="none")
    torch.testing.assert_close(segmentation.segmentation_loss(logits, mask), per_pixel[:, 2:].mean())


def test_resume_gives_the_same_weights(tiny_cam_run, tmp_path, monkeypatch):
    cfg, _ = tiny_cam_run
    two = cfg.replace(**{"segmentation.epochs": 2})
    device = torch.device("cpu")
    straight = segmentation.train(two, tmp_path / "straight", device, progress=False)

    real_save = engine.save_torch

    def crash_after_first_checkpoint(path, obj):
        real_save(path, obj)
        raise KeyboardInterrupt("simulated crash after epoch 1")

    monkeypatch.setattr(engine, "save_torch", crash_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        segmentation.train(two, tmp_path / "resumed", device, progress=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["epoch"] == 0
    resumed = segmentation.train(two, tmp_path / "resumed", device, progress=False)  # epoch 2 only
    a = torch.load(straight["model"], weights_only=True)
    b = torch.load(resumed["model"], weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["epoch"] == 1
    assert straight["val_miou"] == pytest.approx(resumed["val_miou"])
    # The learning curve: one val mIoU per epoch, kept across the resume, ending at the final score.
    assert len(straight["curve"]) == 2 and resumed["curve"] == pytest.approx(straight["curve"])
    assert straight["curve"][-1] == pytest.approx(straight["val_miou"])


def test_learning_curve_does_not_change_training(tiny_cam_run, tmp_path):
    cfg, _ = tiny_cam_run
    cfg = cfg.replace(**{"segmentation.epochs": 3, "segmentation.curve_last": 0})
    device = torch.device("cpu")
    with_curve = segmentation.train(cfg, tmp_path / "curve", device, progress=False)
    last = segmentation.train(cfg.replace(**{"segmentation.curve_last": 2}), tmp_path / "last", device, progress=False)
    without = segmentation.train(
        cfg.replace(**{"segmentation.curve": False}), tmp_path / "plain", device, progress=False
    )
    assert without["curve"] == [] and with_curve["curve_epochs"] == [1, 2, 3]
    # curve_last scores the last epochs only: the same points, the same network
    assert last["curve_epochs"] == [2, 3] and last["curve"] == with_curve["curve"][1:]
    a = torch.load(with_curve["model"], weights_only=True)
    for other in (without, last):
        b = torch.load(other["model"], weights_only=True)
        for k in a:
            torch.testing.assert_close(a[k], b[k], msg=k)
    assert with_curve["val_miou"] == without["val_miou"] == last["val_miou"]


def test_mask_folder_dataset_replaces_masks(tiny_cam_run, tmp_path):
    cfg, _ = tiny_cam_run
    from cpmc_lib.datasets import build_dataset

    base = build_dataset(cfg, "train")
    for name in base.names:
        save_mask_png(tmp_path / "labels" / f"{name}.png", np.full((64, 64), 3, np.uint8))
    ds = segmentation.MaskFolderDataset(base, tmp_path / "labels")
    assert ds[0]["mask"].unique().tolist() == [3] and ds[0]["img"].shape == (3, 64, 64)
    (tmp_path / "labels" / f"{base.names[-1]}.png").unlink()
    with pytest.raises(FileNotFoundError, match="pseudo label"):
        segmentation.MaskFolderDataset(base, tmp_path / "labels")


def test_evaluate_matches_metrics_miou_and_scores_crf(tiny_cam_run):
    cfg, _ = tiny_cam_run
    from cpmc_lib.datasets import build_dataset
    from cpmc_lib.transforms import eval_transform

    torch.manual_seed(0)
    net = models.build_segnet(cfg).eval()
    ds = build_dataset(cfg, "val", eval_transform())
    scores = segmentation.evaluate(
        net, ds, torch.device("cpu"), 11, crf=cfg.crf, batch_size=3, progress=False
    )
    preds = [net(ds[i]["img"][None]).argmax(1)[0] for i in range(len(ds))]
    direct = miou(preds, [ds[i]["mask"] for i in range(len(ds))], 11)
    assert scores["miou"] == pytest.approx(direct["miou"])
    assert 0 <= scores["miou_crf"] <= 100
    # the synthetic benchmark's diagnostic masks: which kinds of pixel the network gets right
    meter = LabelPathologyMeter()
    for i, pred in enumerate(preds):
        meter.update(pred, ds[i]["mask"], ds[i]["diag"])
    assert scores["pathology"] == pytest.approx(meter.compute(), nan_ok=True)
    assert {"recall_body", "fp_context", "fp_distractor"} <= set(scores["pathology"])


def test_stages_pseudo_and_gt_have_their_own_folders(tiny_cam_run):
    cfg, store = tiny_cam_run
    cfg = cfg.replace(**{"pseudo.method": "cam"})  # the hand-made maps of the fixture
    with pytest.raises(StageMissingError, match="python -m cpmc_lib pseudo"):  # reads, never runs it
        segmentation.run(cfg, store, progress=False)
    pseudo.run(cfg, store, progress=False)
    wsss = segmentation.run(cfg, store, progress=False)
    full = segmentation.run_gt(cfg, store, progress=False)
    assert wsss["labels"] == "pseudo" and full["labels"] == "gt"
    assert (store.path("segmentation") / "model.pt").is_file()
    assert (store.path("segmentation_gt") / "model.pt").is_file()
    history = json.loads((store.path("segmentation") / "history.json").read_text())
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    # Reused when finished.
    assert json.dumps(segmentation.run_gt(cfg, store, progress=False)) == json.dumps(full)


def test_training_set_is_the_seg_split_and_the_ceiling_needs_every_mask(fake_voc_root):
    """The networks train on data.seg_split; the ceiling refuses an image without a mask, naming the file."""
    from cpmc_lib.config import Config
    from cpmc_lib.datasets import DatasetError

    voc = {"data.kind": "voc", "data.root": str(fake_voc_root), "data.num_classes": 21}
    cfg = Config().replace(**voc)
    assert segmentation.training_set(cfg).names == ["2007_000001", "2007_000002"]  # "" = cam split (train)
    aug = cfg.replace(**{"data.seg_split": "train_aug"})
    with pytest.raises(
        DatasetError, match=r"SegmentationClassAug/2008_000004\.png does not exist.*train_aug.*SBD"
    ):
        segmentation.training_set(aug)  # 2008_000004 has only an XML annotation
    (fake_voc_root / "ImageSets" / "Segmentation" / "train_aug.txt").write_text(
        "2007_000001\n2007_000002\n2008_000003\n"
    )
    assert len(segmentation.training_set(aug)) == 3  # 2008_000003: its SegmentationClassAug mask


def test_deeplab_param_groups_follow_deeplab_pytorch():
    """backbone weights at lr, head weights x10 and biases x20; no decay on biases; frozen BN left out."""
    from cpmc_lib.config import Config
    from cpmc_lib.models import build_segnet

    cfg = Config().replace(**{"segmentation.head": "v2", "segmentation.freeze_bn": True, "segmentation.head_lr_mult": 10.0,
                              "segmentation.param_groups": "deeplab", "segmentation.stand_in": False})  # fmt: skip
    model = build_segnet(cfg)
    opt = segmentation.make_optimizer(model, cfg.segmentation)
    lr, wd = cfg.segmentation.lr, cfg.segmentation.weight_decay
    got = {(g["lr"] / lr, g["weight_decay"]): sum(p.numel() for p in g["params"]) for g in opt.param_groups}
    assert set(got) == {(1.0, wd), (10.0, wd), (20.0, 0.0)}  # ResNet convs have no bias; BN is frozen
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    bn = model.frozen_bn_parameters()
    assert bn and not any(id(p) in in_opt for p in bn)
    assert all(id(p) in in_opt for p in model.head.parameters())
    plain = segmentation.make_optimizer(model.__class__("resnet18", 3, layers=(1, 1), channels=(8, 16)), cfg.segmentation.__class__())
    assert [g["lr"] for g in plain.param_groups] == [cfg.segmentation.__class__().lr] * 2  # the default: two groups, head x1
