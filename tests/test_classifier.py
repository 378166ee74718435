"""Tests of cpmc_lib.classifier: determinism, loss decrease, resume, the run-store stage."""

from __future__ import annotations

import pytest
import torch

from cpmc_lib import classifier
from cpmc_lib.config import ClassifierConfig, Config, DataConfig, PretrainConfig
from cpmc_lib.io import load_json
from cpmc_lib.models import build_model
from cpmc_lib.store import RunStore


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
