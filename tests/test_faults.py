"""Faults and bad input: a killed training run resumes exactly; bad CAMs, labels, splits and weights
give a defined result or an error that names the file or the function."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_camnet

from cpmc_lib import cli
from cpmc_lib.cam_methods import ClassifierCam, GradCamMethod
from cpmc_lib.cams import evaluate_cams, save_cams
from cpmc_lib.config import Config, load_config
from cpmc_lib.cpmc import cpmc_maps, foreground_maps
from cpmc_lib.datasets import DatasetError, VOCSegmentation
from cpmc_lib.engine import fit
from cpmc_lib.labels import cam_probs, crf_pseudo_label, pseudo_label
from cpmc_lib.mapfile import load_map, save_map
from cpmc_lib.metrics import CamEvaluator, cam_to_mask
from cpmc_lib.models import build_segnet
from cpmc_lib.segmentation import load_segnet
from cpmc_lib.synth import ensure_generated

# --- a training process killed with SIGKILL mid-epoch -------------------------------------------

_KILL_OVERRIDES = [
    "synth.size=64", "synth.train=24", "synth.val=4", "synth.classes=4", "data.num_classes=5",
    "classifier.batch_size=8", "classifier.crop_size=64", "classifier.num_workers=0",
    "pretrain.enabled=false", "device=cpu", "run=kill",
]  # fmt: skip


def _train_cmd(tmp: Path, runs: str, epochs: int) -> list[str]:
    sets = [
        *_KILL_OVERRIDES,
        f"data.root={tmp / 'data'}",
        f"runs_dir={tmp / runs}",
        f"classifier.epochs={epochs}",
    ]
    return [sys.executable, "-m", "cpmc_lib", "train", "--config", "configs/default.yaml", "--quiet",
            *(a for s in sets for a in ("--set", s))]  # fmt: skip


def _killed_mid_training(tmp: Path, epochs: int) -> tuple[int, int]:
    """Start training, SIGKILL it as soon as the first epoch's checkpoint exists.

    Returns (return code, last checkpointed epoch index at the kill)."""
    ckpt = tmp / "killed" / "kill" / ".classifier.partial" / "checkpoint.pt"  # the stage's run in progress
    proc = subprocess.Popen(_train_cmd(tmp, "killed", epochs), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # the checkpoint is written atomically: epoch 2 is running
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return rc, torch.load(ckpt, weights_only=True)["epoch"] if ckpt.exists() else -1


def test_sigkilled_training_resumes_to_the_uninterrupted_result(tmp_path):
    cfg = load_config("configs/default.yaml", [*_KILL_OVERRIDES, f"data.root={tmp_path / 'data'}"])
    ensure_generated(cfg.synth, cfg.data_root(), progress=False, workers=1)
    for epochs in (3, 6):  # more epochs only if the first run somehow finished before the kill
        rc, at = _killed_mid_training(tmp_path, epochs)
        if rc == -signal.SIGKILL:
            break
    assert rc == -signal.SIGKILL, f"training was not killed (exit {rc})"
    folder = tmp_path / "killed" / "kill" / "classifier"
    assert 0 <= at < epochs - 1 and not folder.exists()  # killed before the end: no half-made stage folder

    resumed = subprocess.run(
        _train_cmd(tmp_path, "killed", epochs), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    full = subprocess.run(_train_cmd(tmp_path, "full", epochs), capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr

    other = tmp_path / "full" / "kill" / "classifier"
    hist = json.loads((folder / "history.json").read_text())
    assert hist == json.loads((other / "history.json").read_text()) and len(hist) == epochs
    a, b = (torch.load(f / "model.pt", weights_only=True) for f in (folder, other))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert json.loads(resumed.stdout)["val_mAP"] == json.loads(full.stdout)["val_mAP"]


# --- all-zero and NaN CAMs --------------------------------------------------------------------


def _net():  # widths 16/32: the maps these tests check by value were measured on them
    return tiny_camnet(channels=(16, 32), side_channels=(8, 8, 16))


def test_all_zero_cam_is_all_background():
    zero = np.zeros((2, 6, 6), np.float32)
    assert not cam_to_mask(zero, [1, 2], 0.0).any()
    assert not pseudo_label(zero, [1, 2], 0.5, 0.1).any()
    assert (cam_probs(zero, 0.3).argmax(0) == 0).all()
    ev = CamEvaluator(3)
    ev.update(zero, [1, 2], np.zeros((6, 6), np.int64))
    assert ev.compute()["miou"] == 100.0  # background everywhere, at every threshold


def test_all_zero_classifier_cam_gives_empty_cpmc_maps():
    net, cfg = _net(), Config()
    img, label = torch.randn(2, 3, 64, 64), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    with torch.no_grad():
        out = net(img)
        out = {**out, "cam": torch.zeros_like(out["cam"])}
        maps = cpmc_maps(out, label, cfg.refinement, cfg.prototypes, cfg.calibration, img)
    for key in ("cam", "refined", "proto", "cpmc"):
        assert torch.isfinite(maps[key]).all(), key
        assert not foreground_maps(maps[key], cfg.prototypes.bg_mode).any(), key


def test_nan_cam_is_an_error_naming_the_function():
    nan = np.zeros((1, 4, 4), np.float32)
    nan[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="cam_to_mask: cam holds 1 NaN"):
        cam_to_mask(nan, [1], 0.3)
    with pytest.raises(ValueError, match="CamEvaluator.update: cam holds 1 NaN"):
        CamEvaluator(2).update(nan, [1], np.zeros((4, 4), np.int64))
    with pytest.raises(ValueError, match="cam_to_mask"):
        pseudo_label(nan, [1], 0.3)
    with pytest.raises(ValueError, match="cam_probs"):
        cam_probs(np.full((1, 4, 4), np.inf, np.float32), 0.3)
    net, cfg = _net(), Config()
    img, label = torch.randn(1, 3, 64, 64), torch.tensor([[1.0, 0.0, 0.0]])
    with torch.no_grad():
        out = net(img)
    out["cam"][0, 0, 2, 2] = float("nan")  # the prototype maps alone would hide it
    with pytest.raises(ValueError, match="cpmc_maps: out\\['cam'\\] holds NaN"):
        cpmc_maps(out, label, cfg.refinement, cfg.prototypes, cfg.calibration, img)


class _Images(list):
    """A list of samples with the ``names`` and ``targets`` a dataset has."""

    @property
    def names(self) -> list[str]:
        return [s["name"] for s in self]

    def targets(self, name: str):
        return next(s["mask"].numpy() for s in self if s["name"] == name), None


def test_nan_maps_on_disk_name_the_file(tmp_path):
    mask = torch.zeros(8, 8, dtype=torch.int64)
    save_map(tmp_path, "a", np.array([1]), np.full((1, 8, 8), np.nan, np.float16))
    with pytest.raises(ValueError, match=r"a\.npz: CamEvaluator.update: cam holds 64 NaN"):
        evaluate_cams(tmp_path, _Images([{"name": "a", "mask": mask}]), 2)


# --- images whose label has no foreground class ---------------------------------------------------


def test_image_without_foreground_class_through_cams_and_pseudo_labels(tmp_path):
    net = _net()
    empty = torch.zeros(3)
    samples = _Images(
        {"name": n, "img": torch.randn(3, 64, 64), "label": y, "mask": torch.zeros(64, 64, dtype=torch.int64)}
        for n, y in (("none", empty), ("one", torch.tensor([0.0, 1.0, 0.0])))
    )
    for method in (ClassifierCam(net), GradCamMethod(net)):
        maps = method(torch.stack([s["img"] for s in samples]), torch.stack([s["label"] for s in samples]))
        assert torch.isfinite(maps).all() and not maps[0].any()  # no class: no map
    assert save_cams(ClassifierCam(net), samples, tmp_path / "cam", torch.device("cpu"), progress=False) == 2
    saved = load_map(tmp_path / "cam", "none")
    assert saved.keys.shape == (0,) and saved.cam.shape == (0, 64, 64)
    assert evaluate_cams(tmp_path / "cam", samples, 4)["miou"] == 100.0  # all background, as the masks
    assert not pseudo_label(saved.cam, saved.keys, 0.3).any()
    from cpmc_lib.config import CrfConfig

    img = np.zeros((64, 64, 3), np.uint8)
    assert not crf_pseudo_label(img, saved.cam.astype(np.float32), saved.keys, CrfConfig(), 0.3).any()


def test_grad_cam_works_under_no_grad():
    method, img = GradCamMethod(_net()), torch.randn(2, 3, 64, 64)
    label = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    with torch.no_grad():
        maps = method(img, label)
    torch.testing.assert_close(maps, method(img, label))


# --- empty splits and wrong weights ------------------------------------------------------------------


def test_empty_split_file_is_named(fake_voc_root):
    split = fake_voc_root / "ImageSets" / "Segmentation" / "train.txt"
    split.write_text("\n  \n")
    with pytest.raises(DatasetError, match=f"{split}: split file has no entries"):
        VOCSegmentation(fake_voc_root, "train")


def test_training_checkpoint_of_another_model_is_named(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": torch.nn.Linear(4, 2).state_dict(), "epoch": 0, "history": []}, ckpt)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(
        ValueError, match=f"{ckpt}: .*shape mismatch: weight \\(2, 4\\) vs \\(3, 4\\).*delete it"
    ):
        fit(model, lambda g: [], lambda m, b: {}, opt, 2, ckpt, 0, torch.device("cpu"), progress=False)


def test_segmentation_weights_of_another_config_are_named(tmp_path):
    cfg = Config().replace(**{"segmentation.channels": [8, 16], "segmentation.head_channels": 8})
    path = tmp_path / "model.pt"
    torch.save(build_segnet(cfg.replace(**{"data.num_classes": 5})).state_dict(), path)
    with pytest.raises(ValueError, match=f"{path}: state dict that does not fit .*shape mismatch"):
        load_segnet(cfg, path)


def test_cli_reports_a_diverged_training_without_traceback(monkeypatch, capsys):
    from cpmc_lib import pipeline

    def diverge(*args, **kwargs):
        raise FloatingPointError("classifier: loss became nan at epoch 1; lower the learning rate")

    monkeypatch.setattr(pipeline, "ensure", diverge)
    assert cli.main(["train"]) == 2
    assert "error: classifier: loss became nan" in capsys.readouterr().err
