"""Tests of cpmc_lib.cams: fusion of a known map, normalisation, peer baselines, the stage."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_camnet
from torch import nn

from cpmc_lib import cams
from cpmc_lib.config import CamConfig, ClassifierConfig, Config, DataConfig, PretrainConfig
from cpmc_lib.store import RunStore


class FixedCam(nn.Module):
    """A "model" whose raw CAM is a fixed (K-1, 4, 4) pattern whatever the input; records input sizes."""

    def __init__(self, pattern: torch.Tensor) -> None:
        super().__init__()
        self.pattern = pattern
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        return {"cam": self.pattern.expand(x.shape[0], -1, -1, -1)}


def ramp_pattern(k: int = 3) -> torch.Tensor:
    """Class c: a horizontal ramp 0, 1, 2, 3 (times c + 1), minus 1 so ReLU matters."""
    ramp = torch.arange(4.0).expand(4, 4)
    return torch.stack([(c + 1) * ramp - 1 for c in range(k)])


def up(m: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(m[None], size=(size, size), mode="bilinear", align_corners=False)[0]


def test_multiscale_without_flip_equals_normalised_upsampled_map():
    model = FixedCam(ramp_pattern())
    method = cams.ClassifierCam(model, scales=(1.0, 0.5, 1.5), flip=False)
    label = torch.tensor([[1.0, 0.0, 1.0]])
    out = method(torch.zeros(1, 3, 16, 16), label)
    assert model.seen == [(1, 3, 16, 16), (1, 3, 8, 8), (1, 3, 24, 24)]
    # The same map at every scale: the sum over scales normalises to the one-scale map.
    expected = up(F.relu(ramp_pattern()), 16)
    expected = expected / expected.amax(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(out[0, 0], expected[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[0, 2], expected[2], atol=1e-4, rtol=0)
    assert out[0, 1].abs().max() == 0  # absent class


def test_flip_fusion_of_a_ramp_is_flat():
    pattern = torch.arange(4.0).expand(1, 4, 4).clone()  # 0..3 left to right, one class
    model = FixedCam(pattern)
    out = cams.ClassifierCam(model, scales=(1.0,), flip=True)(torch.zeros(2, 3, 8, 8), torch.ones(2, 1))
    assert model.seen == [(4, 3, 8, 8)]  # [img, hflip(img)] in one batch
    # ramp + flipped ramp = 3 everywhere; normalised to 1 (up to the 1e-5 guard).
    torch.testing.assert_close(out, torch.ones(2, 1, 8, 8), atol=1e-4, rtol=0)


def test_multiscale_flip_matches_manual_sum():
    torch.manual_seed(0)
    img = torch.randn(2, 3, 12, 12)
    label = torch.ones(2, 2)

    def compute(x, y):  # any non-negative, image-dependent map at half resolution
        return F.avg_pool2d(x[:, :2].abs(), 2) * torch.tensor([1.0, 2.0])[None, :, None, None]

    fused = cams.multiscale_flip(compute, img, label, scales=(1.0, 2.0), flip=True)
    manual = 0
    for s in (1.0, 2.0):
        x = img if s == 1.0 else F.interpolate(img, scale_factor=s, mode="bilinear", align_corners=False)
        m = compute(x, label) + compute(x.flip(-1), label).flip(-1)
        manual = manual + F.interpolate(m, size=(12, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(fused, manual)


def test_normalize_cams_max_one_and_absent_zero():
    torch.manual_seed(0)
    raw = torch.rand(3, 4, 5, 5) * 7
    label = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]])
    out = cams.normalize_cams(raw, label)
    amax = out.amax(dim=(2, 3))
    torch.testing.assert_close(amax[label.bool()], torch.ones(3), atol=1e-5, rtol=0)
    assert (amax[~label.bool()] == 0).all()


def test_classifier_cam_is_relu_of_head():
    model = tiny_camnet()
    x = torch.randn(1, 3, 32, 32)
    m = cams.ClassifierCam(model).compute(x, torch.ones(1, 3))
    torch.testing.assert_close(m, F.relu(model(x)["cam"]))


@pytest.mark.parametrize("name", ["gradcam", "gradcampp", "layercam"])
def test_peer_baselines_shapes(name):
    model = tiny_camnet()
    cfg = Config(cams=CamConfig(scales=(1.0, 0.5), flip=True))
    method = cams.make_cam_method(name, model, cfg)
    label = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    out = method(torch.randn(2, 3, 32, 32), label)
    assert out.shape == (2, 3, 32, 32)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert (out[~label.bool()] == 0).all()
    assert out.amax(dim=(2, 3))[label.bool()].max() > 0.9


def test_joint_gradient_pass_gives_each_explainer_its_own_maps():
    """Grad-CAM, Grad-CAM++ and LayerCAM from one forward/backward: the maps of three separate runs."""
    model = tiny_camnet()
    cfg = Config(cams=CamConfig(scales=(1.0, 0.5), flip=True))
    img, label = torch.randn(2, 3, 32, 32), torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    joint = cams.make_joint_method(("layercam", "gradcam", "gradcampp"), model, cfg)  # any order
    both = joint(img, label)
    assert both.shape == (2, 3, 3, 32, 32)
    for i, name in enumerate(joint.parts):
        torch.testing.assert_close(both[:, i], cams.make_cam_method(name, model, cfg)(img, label), rtol=0, atol=1e-5)
    assert all(p.requires_grad for p in model.parameters())  # the frozen stem is given back
    with pytest.raises(ValueError, match="parts"):
        cams.JointGradCam(model, parts=("cam",))


def test_each_method_knows_its_group():
    assert cams.joint_group("gradcampp") == ("gradcam", "gradcampp", "layercam")
    assert cams.joint_group("proto") == ("refined", "proto", "cpmc")
    assert cams.joint_group("cam") == ("cam",)


def test_unknown_method_lists_methods():
    with pytest.raises(ValueError, match="gradcampp"):
        cams.make_cam_method("nope", tiny_camnet(), Config())


def test_stage_saves_scores_and_reuses(fake_synth_root, tmp_path, monkeypatch):
    monkeypatch.delenv("CPMC_DATA", raising=False)
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
    metrics = cams.run(cfg, store, method="cam", progress=False)
    assert {"miou", "threshold", "precision", "recall", "curve", "pathology"} <= set(metrics)
    assert metrics["images"] == 3
    saved = cams.load_cams(store.root, "cam", "train_00000")
    assert saved["keys"].tolist() == [1, 3]  # the image label, as class ids
    assert saved["cam"].dtype == np.float16 and saved["cam"].shape == (2, 20, 20)
    assert np.allclose(saved["cam"].reshape(2, -1).max(1), 1, atol=1e-3)
    # A second method shares the stage folder; the first is reused, not recomputed.
    stamp = (store.path("cams") / "cam" / "metrics.json").stat().st_mtime_ns
    grad = cams.run(cfg, store, method="gradcam", progress=False)
    assert grad["images"] == 3 and grad["made_with"] == ["gradcam", "gradcampp", "layercam"]
    assert json.dumps(cams.run(cfg, store, method="cam", progress=False)) == json.dumps(metrics)
    assert (store.path("cams") / "cam" / "metrics.json").stat().st_mtime_ns == stamp
    assert cams.load_cams(store.root, "layercam", "train_00000")["keys"].tolist() == [1, 3]  # same pass
    with pytest.raises(FileNotFoundError, match="refined"):
        cams.load_cams(store.root, "refined", "train_00000")
    # Asked for the prototype CAM, the stage makes the other missing CPMC maps in the same pass,
    # identical to what their own runs make.
    proto = cams.run(cfg, store, method="proto", progress=False)
    assert proto["made_with"] == ["refined", "proto", "cpmc"]  # the group's order
    joint = {m: cams.load_cams(store.root, m, "train_00001")["cam"] for m in ("refined", "cpmc")}
    for m in ("refined", "cpmc"):
        assert cams.cached_metrics(cfg, store, m)["made_with"] == proto["made_with"]
        shutil.rmtree(store.path("cams") / m)
        alone = cams.run(cfg, store, method=m, progress=False)
        assert alone["made_with"] == [m]
        np.testing.assert_array_equal(cams.load_cams(store.root, m, "train_00001")["cam"], joint[m])


def test_registered_string_methods_resolve():
    for name, entry in cams.CAM_METHODS.items():
        if isinstance(entry, str):
            method = cams.make_cam_method(name, tiny_camnet(), Config())
            assert isinstance(method, cams.CamMethod)


def test_method_maps_are_reused_per_method_settings(tiny_pipeline):
    """Changing a calibration setting recomputes the cpmc maps only; the classifier CAM is reused."""
    from cpmc_lib import cams
    from cpmc_lib.store import RunStore

    cfg, _ = tiny_pipeline
    store = RunStore.for_config(cfg)
    other = cfg.replace(**{"calibration.use_fp": not cfg.calibration.use_fp})
    assert cams.cached_metrics(other, store, "cam") is not None  # same maps, different calibration
    assert cams.cached_metrics(other, store, "cpmc") is None
    assert other.method_hash("cam") == cfg.method_hash("cam")
    assert other.method_hash("cpmc") != cfg.method_hash("cpmc")
    result = cams.run(other, store, method="cpmc", progress=False)
    assert result["method_hash"] == other.method_hash("cpmc")
    assert cams.cached_metrics(cfg, store, "cpmc") is None  # the old cpmc maps were replaced
    assert cams.cached_metrics(cfg, store, "cam") is not None


def test_compare_failures_of_a_map_against_itself_and_another(tiny_pipeline):
    from cpmc_lib.datasets import build_dataset
    from cpmc_lib.store import RunStore

    cfg, _ = tiny_pipeline
    store, ds = RunStore.for_config(cfg), build_dataset(cfg, cfg.data.cam_split)
    same = cams.compare_failures(store, ds, "cam", "cam")
    assert same["fn"] == 0 and same["fp"] == 0  # a map adds no failure to itself
    other = cams.compare_failures(store, ds, "cam", "proto")
    assert 0 <= other["fn"] <= 100 and 0 <= other["fp"] <= 100


def test_benchmark_calibration_reports_the_card_fields(tiny_pipeline):
    from cpmc_lib.store import RunStore

    cfg, _ = tiny_pipeline
    cal = cams.benchmark_calibration(cfg, RunStore.for_config(cfg), progress=False)
    for key in ("cam_miou", "recall_part", "recall_body", "act_context", "act_neutral",
                "proto_fn_of_cam_objects", "proto_fp_on_cam_background"):  # fmt: skip
        assert key in cal
    assert cal["classifier"]["config_hash"] == cfg.stage_hash("classifier")
