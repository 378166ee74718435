"""configs/voc.yaml and configs/coco.yaml end to end on tiny folders in the real data sets' layouts.

Each test writes a few-image folder in the PASCAL VOC 2012 (or WSSS COCO 2014) layout, then runs
``python -m cpmc_lib pipeline --config configs/<voc|coco>.yaml --data <folder>`` through
segmentation, scaled down with ``--set`` only (crop size, epochs, batch, CAM and test scales, no
pretrained weights, cpu): the paper family's networks themselves (ResNet-50 OS16 classifier,
DeepLabV2-ResNet-101 at output stride 8) run on 64 px crops. The user's folder must come out
byte for byte as it went in.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cpmc_lib import pipeline
from cpmc_lib.config import load_config
from cpmc_lib.io import load_json, save_mask_png, voc_palette
from cpmc_lib.models import DeepLabV2Head, build_segnet
from cpmc_lib.report import scored_labels

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# Everything that makes the tiny runs tiny; the networks and every other setting are the config's.
SCALED_DOWN = [
    "device=cpu",
    "classifier.pretrained=false",
    "classifier.crop_size=64",
    "classifier.batch_size=2",
    "classifier.epochs=1",
    "classifier.num_workers=0",
    "cams.scales=[1.0]",
    "crf.workers=0",
    "segmentation.pretrained=false",
    "segmentation.crop_size=64",
    "segmentation.batch_size=2",
    "segmentation.epochs=1",
    "segmentation.num_workers=0",
    "segmentation.test_scales=[1.0]",
    "segmentation.test_flip=false",
]


def _image_and_mask(rng: np.random.Generator, h: int, w: int, classes: list[int]):
    """An (h, w, 3) uint8 image with one noisy palette-coloured box per class and its (h, w) mask."""
    mask = np.zeros((h, w), np.uint8)
    for i, c in enumerate(classes):
        top, left = 4 + 20 * i, 6 + 24 * i
        mask[top : top + 24, left : left + 28] = c
    mask[0, :] = 255  # an ignore row, as VOC's object borders
    img = voc_palette()[np.where(mask == 255, 0, mask)].astype(np.int16) + rng.integers(-20, 20, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _write_split(path: Path, names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{n}\n" for n in names))


def make_voc(root: Path) -> Path:
    """``root/VOCdevkit/VOC2012`` with 8 images of VOC classes; returns VOC2012.

    As with SBD: train (4) and val (2) have masks in ``SegmentationClass/`` and
    ``SegmentationClassAug/``; train_aug (6) is train plus 2 images whose masks exist only in
    ``SegmentationClassAug/``.
    """
    voc = root / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    items = {
        "2007_000032": [1, 15], "2007_000039": [15], "2007_000063": [8, 12], "2007_000068": [12],
        "2007_000033": [1], "2007_000042": [12, 15], "2008_000008": [15, 1], "2008_000015": [8],
    }  # fmt: skip
    names = list(items)
    sbd_only = names[6:]
    for i, (name, classes) in enumerate(items.items()):
        img, mask = _image_and_mask(rng, 72 + 8 * (i % 2), 96, classes)
        (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
        if name not in sbd_only:
            save_mask_png(voc / "SegmentationClass" / f"{name}.png", mask)
        save_mask_png(voc / "SegmentationClassAug" / f"{name}.png", mask)
    sets = voc / "ImageSets" / "Segmentation"
    _write_split(sets / "train.txt", names[:4])
    _write_split(sets / "train_aug.txt", names[:4] + sbd_only)
    _write_split(sets / "val.txt", names[4:6])
    return voc


def make_coco(root: Path) -> Path:
    """``root/coco`` in the WSSS COCO 2014 layout: 4 train and 2 val images, contiguous class ids."""
    coco = root / "coco"
    rng = np.random.default_rng(1)
    items = {
        "train": {"000000000009": [1, 80], "000000000025": [1], "000000000030": [3, 1], "000000000034": [3]},
        "val": {"000000000042": [3], "000000000073": [1, 80]},
    }
    for split, by_id in items.items():
        names = []
        for i, (num, classes) in enumerate(by_id.items()):
            name = f"COCO_{split}2014_{num}"
            img, mask = _image_and_mask(rng, 80, 88 + 8 * (i % 2), classes)
            (coco / f"{split}2014").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(coco / f"{split}2014" / f"{name}.jpg", quality=95)
            save_mask_png(coco / "SegmentationClass" / f"{split}2014" / f"{name}.png", mask)
            names.append(name)
        _write_split(coco / "ImageSets" / f"{split}.txt", names)
    return coco


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_configs_name_the_paper_family_networks():
    for name in ("voc", "coco", "synth-voc-scale"):
        cfg = load_config(CONFIGS / f"{name}.yaml")
        c, s = cfg.classifier, cfg.segmentation
        # torchvision's ImageNet weights, the ones IRN, SIPE, SFC and DeepLab report with
        assert (c.backbone, c.output_stride, c.pretrained, c.freeze_bn) == ("resnet50.tv_in1k", 16, True, True), name
        assert len(cfg.cams.scales) > 1 and cfg.cams.flip, name
        assert (s.backbone, s.head, s.pretrained, s.layers, s.channels) == ("resnet101.tv_in1k", "v2", True, (), ()), name
        assert (s.freeze_bn, s.param_groups) == (True, "deeplab"), name  # deeplab-pytorch's recipe
        assert s.crop_size in (321, 512) and 10 <= s.batch_size <= 16 and s.head_lr_mult == 10, name
        assert (cfg.crf.gaussian_sxy, cfg.crf.bilateral_sxy, cfg.crf.bilateral_srgb) == (3, 50, 5), name
        assert not cfg.pretrain.enabled, name  # real ImageNet weights, not the synthetic stand-in
    # pseudo labels and DeepLab: VOC on train_aug (SBD), as IRN/SIPE/SFC; COCO on its train split
    assert load_config(CONFIGS / "voc.yaml").seg_split() == "train_aug"
    assert load_config(CONFIGS / "coco.yaml").seg_split() == "train"
    scale = load_config(CONFIGS / "synth-voc-scale.yaml")
    assert (scale.synth.size, scale.data.kind) == (512, "synth") and 10_000 <= scale.synth.train <= 11_000


def test_voc_segmentation_network_is_a_resnet101_deeplab():
    cfg = load_config(CONFIGS / "voc.yaml", ["segmentation.pretrained=false"])
    net = build_segnet(cfg)
    blocks = [len(getattr(net.backbone, f"layer{i}")) for i in range(1, 5)]
    assert blocks == [3, 4, 23, 3]  # ResNet-101
    assert isinstance(net.head, DeepLabV2Head) and len(net.head.branches) == 4
    assert [b.dilation for b in net.head.branches] == [(r, r) for r in (6, 12, 18, 24)]
    assert net.backbone.feature_info.reduction()[-1] == 8  # output stride 8: layer3, layer4 dilated


def _run_pipeline(config: str, data: Path, runs: Path) -> dict:
    args = [sys.executable, "-m", "cpmc_lib", "pipeline", "--config", str(CONFIGS / config), "--quiet",
            "--data", str(data), "--run", "tiny", "--set", f"runs_dir={runs}"]  # fmt: skip
    for o in SCALED_DOWN:
        args += ["--set", o]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_json(runs / "tiny" / "metrics.json")


def _assert_complete(
    metrics: dict, kind: str, num_classes: int, images: int, seg_split: str, seg_images: int
) -> None:
    assert metrics["dataset"]["kind"] == kind and metrics["dataset"]["num_classes"] == num_classes
    assert metrics["dataset"]["train_images"] == images
    # pseudo labels for every seg-split image; scored on the cam split's 4 images, as the CAMs
    pl = metrics["pseudo"]
    assert (pl["split"], pl["images"], pl["scored_on"], pl["scored_images"]) == (seg_split, seg_images, "train", 4)
    seg = metrics["seg"]
    assert (seg["split"], seg["wsss"]["train_images"], seg["full"]["train_images"]) == (
        seg_split, seg_images, seg_images,
    )  # fmt: skip
    assert set(metrics["cams"]) == set(pipeline.CAM_REPORT)
    for m, r in metrics["cams"].items():
        assert 0 <= r["miou"] <= 100 and 0 <= r["threshold"] <= 1, m
    scored = scored_labels(metrics["pseudo"])
    assert set(scored) == {"cpmc", "cpmc_crf"} and all(0 <= v["miou"] <= 100 for v in scored.values())
    assert metrics["pseudo"]["threshold_rule"] in ("fixed", "otsu")  # never the ground-truth oracle
    seg = metrics["seg"]
    assert 0 <= seg["wsss"]["miou"] <= 100 and 0 <= seg["full"]["miou"] <= 100
    assert {"classifier", "pseudo", "seg_wsss", "seg_full"} <= set(metrics["stage_seconds"])
    # what ran is the config's network, only scaled down
    c = metrics["config"]
    assert c["segmentation"]["backbone"] == "resnet101.tv_in1k" and c["segmentation"]["head"] == "v2"
    assert c["classifier"]["backbone"] == "resnet50.tv_in1k" and c["classifier"]["output_stride"] == 16


@pytest.mark.slow
def test_voc_config_runs_end_to_end_on_a_tiny_voc_folder(tmp_path):
    voc = make_voc(tmp_path / "user")
    before = _digest(tmp_path / "user")
    metrics = _run_pipeline("voc.yaml", voc, tmp_path / "runs")
    # the classifier and DeepLab (weak and ceiling) on train_aug, CAMs and scores on train
    _assert_complete(metrics, "voc", 21, images=6, seg_split="train_aug", seg_images=6)
    maps = tmp_path / "runs" / "tiny" / "cams"
    assert len(list((maps / "cpmc").glob("*.npz"))) == 6  # the pseudo labels' method: train_aug
    assert len(list((maps / "cam").glob("*.npz"))) == 6  # the classifier CAMs locate the parts (pseudo.assign)
    assert len(list((maps / "proto").glob("*.npz"))) == 4  # the others: train only
    assert len(list((tmp_path / "runs" / "tiny" / "pseudo" / "labels").glob("*.png"))) == 6
    assert _digest(tmp_path / "user") == before  # the user's data is read, never written


@pytest.mark.slow
def test_coco_config_runs_end_to_end_on_a_tiny_coco_folder(tmp_path):
    coco = make_coco(tmp_path / "user")
    before = _digest(tmp_path / "user")
    metrics = _run_pipeline("coco.yaml", coco, tmp_path / "runs")
    _assert_complete(metrics, "coco", 81, images=4, seg_split="train", seg_images=4)
    assert _digest(tmp_path / "user") == before


def test_scaled_down_settings_are_overrides_only():
    """The tiny runs change sizes and schedules, never the networks or the method."""
    keys = {o.split("=", 1)[0] for o in SCALED_DOWN}
    allowed = {"device", "cams.scales", "crf.workers"}
    for k in keys - allowed:
        section, name = k.split(".")
        assert section in ("classifier", "segmentation"), k
        assert name in ("pretrained", "crop_size", "batch_size", "epochs", "num_workers", "test_scales",
                        "test_flip"), k  # fmt: skip


# --- calibration parameters on any grid ------------------------------------------------------------


def test_grid_cells_keep_the_fraction_of_the_grid():
    from cpmc_lib.calibration import grid_cells
    from cpmc_lib.config import CalibrationConfig

    assert grid_cells(CalibrationConfig(), (16, 16)) == (0, 1)  # the defaults, as before
    cal = CalibrationConfig(fp_radius=1, min_size=2)
    assert grid_cells(cal, (16, 16)) == (1, 2)  # the synthetic grid: cells as written
    assert grid_cells(cal, (32, 32)) == (2, 8)  # VOC's 512 px at stride 16: twice the reach, 4x the area
    assert grid_cells(cal, (32, 24)) == (2, 6)  # s = sqrt(768) / 16 = 1.73
    assert grid_cells(cal, (4, 4)) == (0, 1)  # never below one cell
    assert grid_cells(CalibrationConfig(fp_radius=-1, min_size=3), (64, 64)) == (-1, 48)  # -1: everywhere
    assert grid_cells(CalibrationConfig(fp_radius=1, min_size=2, grid_ref=0), (32, 32)) == (1, 2)


def test_cpmc_maps_convert_the_reach_for_the_grid_at_hand():
    """On a 32x32 grid, fp_radius=1 / min_size=2 of a 16-cell grid act as 2 / 8 cells written as cells."""
    import torch

    from cpmc_lib.config import CalibrationConfig, PrototypeConfig, RefinementConfig
    from cpmc_lib.cpmc import cpmc_maps

    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 8, 32, 32, generator=g)
    out = {"cam": torch.randn(2, 3, 32, 32, generator=g), "feat": feat, "stages": [feat],
           "hie": torch.randn(2, 8, 32, 32, generator=g)}  # fmt: skip
    label = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    r, p = RefinementConfig(power=4.0), PrototypeConfig()

    def maps(**cal):
        return cpmc_maps(out, label, r, p, CalibrationConfig(**cal))

    scaled = maps(fp_radius=1, min_size=2, grid_ref=16)
    torch.testing.assert_close(scaled["cpmc"], maps(fp_radius=2, min_size=8, grid_ref=0)["cpmc"])
    assert scaled["fp"].any()  # there are FP regions whose reach the conversion changed
    assert not torch.equal(scaled["cpmc"], maps(fp_radius=1, min_size=2, grid_ref=0)["cpmc"])


def test_prototype_min_size_keeps_its_fraction_of_the_grid():
    """prototypes.min_size=2 of a 16-cell grid is 8 cells on a 32x32 grid; on 16x16 it is 2, as written."""
    import torch

    from cpmc_lib.calibration import area_cells
    from cpmc_lib.config import CalibrationConfig, PrototypeConfig, RefinementConfig
    from cpmc_lib.cpmc import cpmc_maps

    cal = CalibrationConfig()  # grid_ref 16
    assert [area_cells(2, cal, g) for g in ((16, 16), (32, 32), (32, 24), (8, 8))] == [2, 8, 6, 1]
    assert area_cells(2, CalibrationConfig(grid_ref=0), (32, 32)) == 2  # grid_ref 0: cells as written
    label = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])

    def maps(side, proto_min, cal_min, grid_ref):
        g = torch.Generator().manual_seed(0)
        feat = torch.randn(2, 8, side, side, generator=g)
        out = {"cam": torch.randn(2, 3, side, side, generator=g), "feat": feat, "stages": [feat],
               "hie": torch.randn(2, 8, side, side, generator=g)}  # fmt: skip
        p = PrototypeConfig(clusters=2, min_size=proto_min)
        return cpmc_maps(out, label, RefinementConfig(power=4.0), p, CalibrationConfig(min_size=cal_min, grid_ref=grid_ref))

    # 32x32: min_size 2 (and calibration.min_size 1) of the 16-cell grid act as 8 (and 4) cells written as cells
    scaled = maps(32, 2, 1, 16)
    torch.testing.assert_close(scaled["proto"], maps(32, 8, 4, 0)["proto"])
    torch.testing.assert_close(scaled["cpmc"], maps(32, 8, 4, 0)["cpmc"])
    assert not torch.equal(scaled["proto"], maps(32, 2, 4, 0)["proto"])  # the conversion changes the map
    # 16x16: the reference grid itself, nothing changes
    torch.testing.assert_close(maps(16, 2, 1, 16)["cpmc"], maps(16, 2, 1, 0)["cpmc"], rtol=0, atol=0)

def test_segmentation_weights_file_loads_the_backbone_and_names_a_misfit(tmp_path):
    """segmentation.weights: a timm ImageNet state dict (with its fc) fills the backbone; others fail clearly."""
    import timm
    import torch

    from cpmc_lib.config import Config

    torch.manual_seed(1)
    imagenet = timm.create_model("resnet18", layers=(1, 1), channels=(64, 128), num_classes=7)
    path = tmp_path / "resnet.pth"
    torch.save(imagenet.state_dict(), path)
    cfg = Config().replace(**{"segmentation.weights": str(path)})
    net = build_segnet(cfg)
    own = net.backbone.state_dict()
    for k, v in own.items():
        torch.testing.assert_close(v, imagenet.state_dict()[k], msg=k)
    assert not any(k.startswith("fc.") for k in own)
    wrong = cfg.replace(**{"segmentation.channels": "[32, 64]"})
    with pytest.raises(ValueError, match=r"resnet\.pth.*DeepLabV3\(resnet18"):
        build_segnet(wrong)
