"""CAM methods: fusion over scales and flips, normalisation, the peer baselines, the registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_camnet
from torch import nn

from cpmc_lib import cam_methods
from cpmc_lib.config import CamConfig, Config, ConfigError


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
    method = cam_methods.ClassifierCam(model, scales=(1.0, 0.5, 1.5), flip=False)
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
    out = cam_methods.ClassifierCam(model, scales=(1.0,), flip=True)(
        torch.zeros(2, 3, 8, 8), torch.ones(2, 1)
    )
    assert model.seen == [(4, 3, 8, 8)]  # [img, hflip(img)] in one batch
    # ramp + flipped ramp = 3 everywhere; normalised to 1 (up to the 1e-5 guard).
    torch.testing.assert_close(out, torch.ones(2, 1, 8, 8), atol=1e-4, rtol=0)


def test_multiscale_flip_matches_manual_sum():
    torch.manual_seed(0)
    img = torch.randn(2, 3, 12, 12)
    label = torch.ones(2, 2)

    def compute(x, y):  # any non-negative, image-dependent map at half resolution
        return F.avg_pool2d(x[:, :2].abs(), 2) * torch.tensor([1.0, 2.0])[None, :, None, None]

    fused = cam_methods.multiscale_flip(compute, img, label, scales=(1.0, 2.0), flip=True)
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
    out = cam_methods.normalize_cams(raw, label)
    amax = out.amax(dim=(2, 3))
    torch.testing.assert_close(amax[label.bool()], torch.ones(3), atol=1e-5, rtol=0)
    assert (amax[~label.bool()] == 0).all()


def test_classifier_cam_is_relu_of_head():
    model = tiny_camnet()
    x = torch.randn(1, 3, 32, 32)
    m = cam_methods.ClassifierCam(model).compute(x, torch.ones(1, 3))
    torch.testing.assert_close(m, F.relu(model(x)["cam"]))


@pytest.mark.parametrize("name", ["gradcam", "gradcampp", "layercam"])
def test_peer_baselines_shapes(name):
    model = tiny_camnet()
    cfg = Config(cams=CamConfig(scales=(1.0, 0.5), flip=True))
    method = cam_methods.make_cam_method(name, model, cfg)
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
    joint = cam_methods.make_joint_method(("layercam", "gradcam", "gradcampp"), model, cfg)  # any order
    both = joint(img, label)
    assert both.shape == (2, 3, 3, 32, 32)
    for i, name in enumerate(joint.parts):
        torch.testing.assert_close(
            both[:, i], cam_methods.make_cam_method(name, model, cfg)(img, label), rtol=0, atol=1e-5
        )
    assert all(p.requires_grad for p in model.parameters())  # the frozen stem is given back
    with pytest.raises(ValueError, match="parts"):
        cam_methods.JointGradCam(model, parts=("cam",))


def test_each_method_knows_its_group():
    assert cam_methods.joint_group("gradcampp") == ("gradcam", "gradcampp", "layercam")
    assert cam_methods.joint_group("proto") == ("refined", "proto", "cpmc")
    assert cam_methods.joint_group("cam") == ("cam",)


def test_unknown_method_lists_methods():
    with pytest.raises(ValueError, match="gradcampp"):
        cam_methods.make_cam_method("nope", tiny_camnet(), Config())


def test_registry_holds_real_classes_and_matches_the_config_choices():
    """No import strings: every name maps to a CamMethod subclass, and pseudo.method accepts exactly these."""
    for name, cls in cam_methods.CAM_METHODS.items():
        assert isinstance(cls, type) and issubclass(cls, cam_methods.CamMethod), name
        assert isinstance(cam_methods.make_cam_method(name, tiny_camnet(), Config()), cls)
    for group, cls in cam_methods.JOINT_METHODS.items():
        assert isinstance(cls, type) and issubclass(cls, cam_methods.JointCam) and cls.group == group
    for name in cam_methods.CAM_METHODS:
        assert Config().replace(**{"pseudo.method": name}).pseudo.method == name
    with pytest.raises(ConfigError, match="'cam', 'refined'"):
        Config().replace(**{"pseudo.method": "gradcam++"})
