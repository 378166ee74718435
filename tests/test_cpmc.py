"""Tests of cpmc_lib.cpmc: the assembled maps and the CAM methods that wrap them."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from cpmc_lib import cam_methods
from cpmc_lib.config import CamConfig, Config
from cpmc_lib.cpmc import cpmc_maps, foreground_maps
from cpmc_lib.models import CamNet


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    net = CamNet(
        "resnet18", num_classes=4, out_indices=(0, 1, 2), side_channels=(8, 8, 16), output_stride=8,
        layers=(1, 1), channels=(16, 32),
    ).eval()  # fmt: skip
    img = torch.randn(2, 3, 64, 64)
    label = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    return net, img, label


def test_foreground_maps_by_hand():
    cam = torch.tensor([[0.5, 0.2, 0.9], [0.7, 0.1, 0.9]])[None, :, None, :]  # bg, one class
    assert_close(foreground_maps(cam, "drop")[0, 0, 0], torch.tensor([0.7, 0.1, 0.9]))
    assert_close(foreground_maps(cam, "subtract")[0, 0, 0], torch.tensor([0.2, 0.0, 0.0]))
    assert_close(foreground_maps(cam, "gate")[0, 0, 0], torch.tensor([0.7, 0.0, 0.0]))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"prototypes.seed_rule": "quantile", "calibration.clusters": 2, "calibration.ref_rule": "quantile"},
        {
            "prototypes.seed_rule": "iou",
            "refinement.source": "image+feat",
            "calibration.pairing": "classifier",
        },
        {"prototypes.clusters": 2, "prototypes.feature": "feat"},
        {"calibration.clusters": 2, "calibration.fp_action": "both", "calibration.gate": "attached"},
        {"calibration.fp_action": "suppress", "calibration.fp_radius": -1, "calibration.fn_radius": 1},
        {"calibration.gate": "attached_cam", "calibration.fn_radius": 0},
    ],
)
def test_cpmc_maps_shapes_and_absent_classes(tiny, overrides):
    net, img, label = tiny
    cfg = Config().replace(**overrides)
    with torch.no_grad():
        maps = cpmc_maps(net(img), label, cfg.refinement, cfg.prototypes, cfg.calibration, img)
    for key in ("cam", "refined", "proto", "cpmc"):
        assert maps[key].shape == (2, 4, 8, 8)
        assert maps[key].min() >= 0
        assert torch.equal(maps[key][0, 2], torch.zeros(8, 8)), key  # class 2 absent in image 0
        assert torch.equal(maps[key][1, 1], torch.zeros(8, 8)), key
    assert not maps["fn"][:, 0].any() and not maps["fp"][:, 0].any()


@pytest.mark.parametrize("method", ["refined", "proto", "cpmc"])
def test_cam_methods_are_registered(tiny, method):
    net, img, label = tiny
    m = cam_methods.make_cam_method(method, net, Config())
    out = m(img, label)
    assert out.shape == (2, 3, 64, 64)
    assert torch.equal(out[0, 1], torch.zeros(64, 64))
    assert out.max() <= 1


def test_joint_pass_gives_each_method_its_own_maps(tiny):
    """One forward pass for refined, proto and cpmc: the same maps as three separate methods."""
    from cpmc_lib.cam_methods import JointCpmcCam

    net, img, label = tiny
    cfg = Config(cams=CamConfig(scales=(1.0, 0.5)))
    joint = JointCpmcCam.from_config(net, cfg)
    joint.parts = ("cpmc", "refined")  # any subset, any order
    both = joint(img, label)
    assert both.shape == (2, 2, 3, 64, 64)
    for i, key in enumerate(joint.parts):
        assert_close(both[:, i], cam_methods.make_cam_method(key, net, cfg)(img, label), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="parts"):
        JointCpmcCam(net, cfg, parts=("cam",))
