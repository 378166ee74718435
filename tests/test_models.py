"""Tests of cpmc_lib.models: shapes, the IRN head, hierarchical features, weights files."""

from __future__ import annotations

import re

import pytest
import torch

from cpmc_lib.config import ClassifierConfig, Config
from cpmc_lib.models import CamNet, build_model, hierarchical_features, load_classifier, load_weights


def tiny_net(layers=(1, 1), num_classes: int = 4) -> CamNet:
    return CamNet(
        "resnet18", num_classes, out_indices=(0, 1, 2), side_channels=(4, 4, 8), output_stride=8,
        layers=layers, channels=(8, 16),
    )  # fmt: skip


def test_synth_default_shapes():
    torch.manual_seed(0)
    model = build_model(Config()).eval()
    out = model(torch.randn(2, 3, 128, 128))
    assert out["logits"].shape == (2, 10)
    assert out["cam"].shape == (2, 10, 16, 16)  # stride 8
    assert out["feat"].shape == (2, 128, 16, 16)
    assert out["hie"].shape == (2, 64 + 64 + 128, 16, 16)
    assert [s.shape[1] for s in out["stages"]] == [64, 64, 128]
    assert model.stride == 8


def test_resnet50_os16_shapes():
    cfg = Config(
        classifier=ClassifierConfig(
            backbone="resnet50", layers=(), channels=(), out_indices=(1, 2, 3, 4), output_stride=16,
            side_channels=(128, 128, 256, 256), freeze_bn=True,
        )
    )  # fmt: skip
    model = build_model(cfg).eval()
    out = model(torch.randn(1, 3, 64, 64))
    assert out["cam"].shape == (1, 10, 4, 4)  # 64 / 16
    assert out["feat"].shape == (1, 2048, 4, 4)
    assert out["hie"].shape == (1, 768, 4, 4)  # SIPE's 128 + 128 + 256 + 256
    assert model.stride == 16


def test_cam_is_head_projection_and_logits_its_mean():
    torch.manual_seed(0)
    model = tiny_net().eval()
    out = model(torch.randn(2, 3, 32, 32))
    w = model.classifier.weight[:, :, 0, 0]  # (K-1, C)
    manual = torch.einsum("kc,bchw->bkhw", w, out["feat"])
    torch.testing.assert_close(out["cam"], manual)
    torch.testing.assert_close(out["logits"], manual.mean(dim=(2, 3)))
    assert model.classifier.bias is None


def test_hierarchical_features_unit_norm_per_stage():
    torch.manual_seed(0)
    stages = [torch.randn(2, 5, 6, 6), torch.randn(2, 7, 6, 6)]
    side = torch.nn.ModuleList([torch.nn.Conv2d(5, 3, 1, bias=False), torch.nn.Conv2d(7, 4, 1, bias=False)])
    hie = hierarchical_features(stages, side, (6, 6))
    assert hie.shape == (2, 7, 6, 6)
    torch.testing.assert_close(hie[:, :3].norm(dim=1), torch.ones(2, 6, 6), atol=1e-3, rtol=0)  # 1e-5 guard
    torch.testing.assert_close(hie[:, 3:].norm(dim=1), torch.ones(2, 6, 6), atol=1e-3, rtol=0)  # 1e-5 guard


def test_hierarchical_features_detached_and_resized():
    torch.manual_seed(0)
    model = tiny_net().eval()
    x = torch.randn(1, 3, 32, 32)
    out = model(x)
    # Stage 0 (stride 2) is projected, normalised, then resized to the 4x4 CAM grid.
    y = model.side[0](out["stages"][0])
    y = y / (y.norm(dim=1, keepdim=True) + 1e-5)
    ref = torch.nn.functional.interpolate(y, size=(4, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out["hie"][:, :4], ref)
    out["hie"].sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())  # inputs detached


def test_freeze_bn_keeps_bn_in_eval():
    model = CamNet("resnet18", 3, (1, 2), (4, 4), 8, (1, 1), (8, 16), freeze_bn=True).train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)


def test_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    model = tiny_net().eval()
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    torch.manual_seed(1)
    other = load_weights(tiny_net(), path).eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(other(x)["cam"], model(x)["cam"])


def test_backbone_only_weights_drop_classification_head(tmp_path):
    torch.manual_seed(0)
    model = tiny_net()
    state = {**model.backbone.state_dict(), "fc.weight": torch.zeros(1000, 16), "fc.bias": torch.zeros(1000)}
    path = tmp_path / "backbone.pt"
    torch.save({"state_dict": state}, path)
    torch.manual_seed(1)
    other = load_weights(tiny_net(), path)
    for k, v in model.backbone.state_dict().items():
        torch.testing.assert_close(other.backbone.state_dict()[k], v)


def test_build_model_loads_config_weights(tmp_path):
    torch.manual_seed(0)
    cfg = Config()
    path = tmp_path / "w.pt"
    model = build_model(cfg)
    torch.save({"model": model.state_dict()}, path)  # an engine.fit checkpoint layout
    loaded = build_model(cfg.replace(**{"classifier.weights": str(path)}))
    torch.testing.assert_close(loaded.classifier.weight, model.classifier.weight)
    reloaded = load_classifier(path, cfg)
    assert not reloaded.training
    torch.testing.assert_close(reloaded.classifier.weight, model.classifier.weight)


def test_missing_weights_file_names_path(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_weights(tiny_net(), path)


def test_wrong_architecture_names_path_and_arch(tmp_path):
    path = tmp_path / "deeper.pt"
    torch.save(tiny_net(layers=(2, 2)).state_dict(), path)
    model = tiny_net(layers=(1, 1))
    with pytest.raises(ValueError, match=re.escape(str(path))) as err:
        load_weights(model, path)
    assert "resnet18(" in str(err.value) and "unexpected" in str(err.value)
    torch.save(tiny_net(num_classes=6).state_dict(), path)  # same backbone, other head shape
    with pytest.raises(ValueError, match="shape mismatch"):
        load_weights(model, path)
