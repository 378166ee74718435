"""Tests of cpmc_lib.classifier: determinism, loss decrease, resume, the run-store stage."""

from __future__ import annotations

import pytest
import torch

from cpmc_lib import classifier
from cpmc_lib.config import ClassifierConfig, Config, DataConfig, PretrainConfig
from cpmc_lib.io import load_json
from cpmc_lib.models import build_model
from cpmc_lib.store import RunStore, stage_hash


def tiny_config(root, runs, epochs: int = 2, num_workers: int = 0) -> Config:
    """A from-scratch 2-stage ResNet of widths 8/16 on the 3-image fake synthetic set (K = 4)."""
    return Config(
        device="cpu",
        runs_dir=str(runs),
        data=DataConfig(kind="synth", root=str(root), num_classes=4),
        classifier=ClassifierConfig(
            layers=(1, 1), channels=(8, 16), side_channels=(4, 4, 8), batch_size=2, crop_size=16,
            epochs=epochs, lr=0.05, num_workers=num_workers,
        ),
        pretrain=PretrainConfig(enabled=False),  # from scratch: these tests are about training itself
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _no_data_override(monkeypatch):
    monkeypatch.delenv("CPMC_DATA", raising=False)
    monkeypatch.delenv("CPMC_DEVICE", raising=False)


def _weights(path):
    return torch.load(path / "model.pt", weights_only=True)


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_training_is_deterministic(fake_synth_root, tmp_path):
    cfg = tiny_config(fake_synth_root, tmp_path, num_workers=1)  # the default: transforms in a worker
    dev = torch.device("cpu")
    r1 = classifier.train(cfg, tmp_path / "a", dev, progress=False)
    classifier.train(cfg, tmp_path / "b", dev, progress=False)
    _assert_same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert set(r1) == {"val_mAP", "val_F1", "epochs", "seconds", "model"}
    history = load_json(tmp_path / "a" / "history.json")
    assert [h["epoch"] for h in history] == [1, 2]
    assert all("val_mAP" in h and "val_F1" in h and "loss" in h for h in history)


def test_resume_after_crash_gives_same_weights(fake_synth_root, tmp_path, monkeypatch):
    cfg = tiny_config(fake_synth_root, tmp_path, epochs=2)
    dev = torch.device("cpu")
    classifier.train(cfg, tmp_path / "full", dev, progress=False)

    real = classifier.classification_metrics
    calls = []

    def crash_in_epoch_two(*args):
        calls.append(1)
        if len(calls) == 2:  # validation of epoch 2 runs before its checkpoint is written
            raise RuntimeError("simulated crash")
        return real(*args)

    monkeypatch.setattr(classifier, "classification_metrics", crash_in_epoch_two)
    with pytest.raises(RuntimeError, match="simulated crash"):
        classifier.train(cfg, tmp_path / "resumed", dev, progress=False)
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    monkeypatch.setattr(classifier, "classification_metrics", real)
    classifier.train(cfg, tmp_path / "resumed", dev, progress=False)
    _assert_same(_weights(tmp_path / "full"), _weights(tmp_path / "resumed"))


def test_steps_reduce_the_loss(fake_synth_root, tmp_path):
    cfg = tiny_config(fake_synth_root, tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt = classifier.make_optimizer(model, cfg)
    img = torch.randn(3, 3, 16, 16)
    label = torch.tensor([[1.0, 0, 1], [0, 1, 0], [0, 0, 1]])
    losses = []
    for _ in range(15):
        loss = classifier.classification_loss(model(img)["logits"], label)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_new_layers_get_lr_multiplier(fake_synth_root, tmp_path):
    cfg = tiny_config(fake_synth_root, tmp_path)
    model = build_model(cfg)
    opt = classifier.make_optimizer(model, cfg)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.5]
    assert opt.param_groups[0]["momentum"] == 0.9
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))
    adamw = classifier.make_optimizer(model, cfg.replace(**{"classifier.optimizer": "adamw"}))
    assert isinstance(adamw, torch.optim.AdamW)
    with pytest.raises(ValueError, match="optimizer"):
        classifier.make_optimizer(model, cfg.replace(**{"classifier.optimizer": "lion"}))


def test_run_stage_is_reused(fake_synth_root, tmp_path):
    cfg = tiny_config(fake_synth_root, tmp_path / "runs", epochs=1)
    store = RunStore.for_config(cfg)
    first = classifier.run(cfg, store, progress=False)
    stamp = (store.path("classifier") / "model.pt").stat().st_mtime_ns
    again = classifier.run(cfg, store, progress=False)
    assert again == first
    assert (store.path("classifier") / "model.pt").stat().st_mtime_ns == stamp
    assert (store.path("classifier") / "checkpoint.pt").exists()


def test_consistency_training_is_part_of_the_classifier_key_and_runs(tmp_path):
    """With train_consistency_weight > 0 the CPMC sections shape the classifier (and its cache key)."""
    from cpmc_lib.classifier import run
    from cpmc_lib.config import load_config
    from cpmc_lib.store import RunStore

    cfg = load_config(None, [
        "synth.size=64", "synth.train=16", "synth.val=8", "synth.classes=3", "data.num_classes=4",
        f"data.root={tmp_path / 'data'}", "classifier.epochs=1", "classifier.batch_size=8",
        "classifier.crop_size=64", "calibration.train_consistency_weight=1.0", "device=cpu",
        "pretrain.enabled=false",
    ])  # fmt: skip
    plain = cfg.replace(**{"calibration.train_consistency_weight": 0.0})
    assert stage_hash(cfg, "classifier") != stage_hash(plain, "classifier")
    assert stage_hash(plain.replace(**{"calibration.use_fn": False}), "classifier") == stage_hash(
        plain, "classifier"
    )
    from cpmc_lib import synth

    synth.ensure_generated(cfg.synth, cfg.data_root(), progress=False)
    run(cfg, RunStore(tmp_path / "runs" / "c"), progress=False)
    import json

    history = json.loads((tmp_path / "runs" / "c" / "classifier" / "history.json").read_text())
    assert history[0]["cons"] > 0 and history[0]["loss"] > history[0]["cls"]


def test_erasing_blanks_only_present_classes_peaks():
    """A pixel is erased where a present class's map is above threshold x its own peak, nowhere else."""
    img = torch.ones(1, 3, 8, 8)
    cam = torch.zeros(1, 2, 4, 4)
    cam[0, 0, 0, 0], cam[0, 0, 1, 1] = 2.0, 0.5  # class 1: its peak and a cell at 0.25 of it
    cam[0, 1, 3, 3] = 5.0  # class 2, absent: erases nothing
    out = classifier.erase_discriminative(img, cam, torch.tensor([[1.0, 0.0]]), 0.5)
    erased = torch.zeros(8, 8, dtype=torch.bool)
    erased[:2, :2] = True  # the peak cell, at the image's resolution
    assert (out[0] == 0).all(0).equal(erased)
    assert out[0][:, ~erased].eq(1).all()
    lower = classifier.erase_discriminative(img, cam, torch.tensor([[1.0, 0.0]]), 0.2)
    assert (lower[0, 0, 2:4, 2:4] == 0).all()  # the 0.25 cell goes once the threshold is below it


def test_erasing_is_part_of_the_classifier_key_only_when_on(fake_synth_root, tmp_path):
    cfg = tiny_config(fake_synth_root, tmp_path / "runs", epochs=1)
    on = cfg.replace(**{"classifier.erase_weight": 1.0})
    for stage in ("classifier", "cams", "pseudo", "segmentation"):
        assert stage_hash(on, stage) != stage_hash(cfg, stage)
        # off, its threshold changes nothing (the keys of before erasing existed)
        assert stage_hash(cfg.replace(**{"classifier.erase_threshold": 0.9}), stage) == stage_hash(cfg, stage)
    for stage in ("pretrain", "segmentation_gt"):  # the backbone's shape and the ceiling do not see it
        assert stage_hash(on, stage) == stage_hash(cfg, stage)
    classifier.run(on, RunStore.for_config(on), progress=False)
    history = load_json(RunStore.for_config(on).path("classifier") / "history.json")
    assert history[0]["erase"] > 0 and history[0]["loss"] > history[0]["erase"]
