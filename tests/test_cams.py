"""Stage "cams": maps saved per image, scored, reused per method; inputs read from the run store."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cpmc_lib import cams, classifier
from cpmc_lib.config import CamConfig, ClassifierConfig, Config, DataConfig, PretrainConfig
from cpmc_lib.mapfile import load_map
from cpmc_lib.stages import method_hash
from cpmc_lib.store import RunStore, StageMissingError


def test_stage_saves_scores_and_reuses(fake_synth_root, tmp_path, monkeypatch):
    monkeypatch.delenv("CPMC_DEVICE", raising=False)
    cfg = Config(
        device="cpu",
        runs_dir=str(tmp_path / "runs"),
        data=DataConfig(kind="synth", root=str(fake_synth_root), num_classes=4),
        classifier=ClassifierConfig(
            layers=(1, 1), channels=(8, 16), side_channels=(4, 4, 8), batch_size=2, crop_size=16, epochs=1
        ),
        cams=CamConfig(scales=(1.0, 0.5), batch_size=2),
        pretrain=PretrainConfig(enabled=False),
    )
    store = RunStore.for_config(cfg)
    with pytest.raises(StageMissingError, match="python -m cpmc_lib train"):  # reads, never trains
        cams.run(cfg, store, method="cam", progress=False)
    classifier.run(cfg, store, progress=False)
    metrics = cams.run(cfg, store, method="cam", progress=False)
    assert {"miou", "threshold", "precision", "recall", "curve", "pathology"} <= set(metrics)
    assert metrics["images"] == 3
    saved = load_map(store.maps_dir("cam"), "train_00000")
    assert saved.keys.tolist() == [1, 3]  # the image label, as class ids
    assert saved.cam.dtype == np.float16 and saved.cam.shape == (2, 20, 20)
    assert np.allclose(saved.cam.reshape(2, -1).max(1), 1, atol=1e-3)
    # A second method shares the stage folder; the first is reused, not recomputed.
    stamp = (store.path("cams") / "cam" / "metrics.json").stat().st_mtime_ns
    grad = cams.run(cfg, store, method="gradcam", progress=False)
    assert grad["images"] == 3 and grad["made_with"] == ["gradcam", "gradcampp", "layercam"]
    assert json.dumps(cams.run(cfg, store, method="cam", progress=False)) == json.dumps(metrics)
    assert (store.path("cams") / "cam" / "metrics.json").stat().st_mtime_ns == stamp
    assert load_map(store.maps_dir("layercam"), "train_00000").keys.tolist() == [1, 3]  # same pass
    with pytest.raises(FileNotFoundError, match="refined"):
        load_map(store.maps_dir("refined"), "train_00000")
    # Asked for the prototype CAM, the stage makes the other missing CPMC maps in the same pass,
    # identical to what their own runs make.
    proto = cams.run(cfg, store, method="proto", progress=False)
    assert proto["made_with"] == ["refined", "proto", "cpmc"]  # the group's order
    joint = {m: load_map(store.maps_dir(m), "train_00001").cam for m in ("refined", "cpmc")}
    for m in ("refined", "cpmc"):
        assert store.map_metrics(cfg, m)["made_with"] == proto["made_with"]
        shutil.rmtree(store.path("cams") / m)
        alone = cams.run(cfg, store, method=m, progress=False)
        assert alone["made_with"] == [m]
        np.testing.assert_array_equal(load_map(store.maps_dir(m), "train_00001").cam, joint[m])


def test_method_maps_are_reused_per_method_settings(tiny_pipeline):
    """Changing a calibration setting recomputes the cpmc maps only; the classifier CAM is reused."""
    cfg, _ = tiny_pipeline
    store = RunStore.for_config(cfg)
    other = cfg.replace(**{"calibration.use_fp": not cfg.calibration.use_fp})
    assert store.map_metrics(other, "cam") is not None  # same maps, different calibration
    assert store.map_metrics(other, "cpmc") is None
    assert method_hash(other, "cam") == method_hash(cfg, "cam")
    assert method_hash(other, "cpmc") != method_hash(cfg, "cpmc")
    result = cams.run(other, store, method="cpmc", progress=False)
    assert result["method_hash"] == method_hash(other, "cpmc")
    assert store.map_metrics(cfg, "cpmc") is None  # the old cpmc maps were replaced
    assert store.map_metrics(cfg, "cam") is not None
