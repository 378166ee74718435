"""Tests of cpmc_lib.pretrain: the source set, the weights file and the stage's cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cpmc_lib import pretrain, synth
from cpmc_lib.config import Config
from cpmc_lib.models import build_model
from cpmc_lib.stages import stage_hash
from cpmc_lib.store import RunStore

TINY = [
    "device=cpu",
    "classifier.channels=[8, 16]",
    "classifier.side_channels=[4, 4, 8]",
    "pretrain.images=8",
    "pretrain.val_images=4",
    "pretrain.size=32",
    "pretrain.epochs=1",
    "pretrain.batch_size=4",
]


@pytest.fixture
def tiny_cfg(tmp_path) -> Config:
    return Config().replace(runs_dir=str(tmp_path / "runs")).replace(**dict(o.split("=", 1) for o in TINY))


def test_source_set_deterministic_and_varied():
    a, b = pretrain.SourceSet(6, 32, seed=0), pretrain.SourceSet(6, 32, seed=0)
    for i in range(6):
        torch.testing.assert_close(a[i]["img"], b[i]["img"])
        assert torch.equal(a[i]["target"], b[i]["target"])
    assert a[0]["img"].shape == (3, 32, 32)
    assert not torch.equal(a[0]["img"], pretrain.SourceSet(6, 32, seed=1)[0]["img"])
    assert not torch.equal(a[0]["img"], pretrain.SourceSet(6, 32, seed=0, split="val")[0]["img"])


def test_every_source_class_draws():
    rng = np.random.default_rng(0)
    targets = np.stack([pretrain.render_source_image(48, rng)[1] for _ in range(200)])
    for j, names in enumerate((pretrain.SOURCE_SHAPES, pretrain.SOURCE_TEXTURES, pretrain.SOURCE_COLOURS)):
        assert set(targets[:, j]) == set(range(len(names)))


def test_source_classes_disjoint_from_benchmark():
    assert not set(pretrain.SOURCE_SHAPES) & {*synth.BODY_SHAPES, *synth.PART_SHAPES}
    assert not set(pretrain.SOURCE_TEXTURES) & set(synth.BODY_TEXTURES)
    assert not set(pretrain.SOURCE_COLOURS) & set(synth.PART_COLOURS)
    bench = np.array(
        [
            *synth.PART_COLOURS.values(),
            *synth.BODY_COLOURS,
            *synth.ATYPICAL_COLOURS,
            *synth.CONTEXT_TINTS,
        ],
        np.float32,
    )
    jitter = pretrain.COLOUR_JITTER * np.sqrt(3)  # the farthest a jittered colour moves
    for name, colour in pretrain.SOURCE_COLOURS.items():
        dist = np.linalg.norm(bench - np.asarray(colour, np.float32), axis=1).min()
        assert dist - jitter > 30, f"source colour {name} is close to a benchmark colour"


def test_unknown_shape_and_texture_name_the_valid_ones():
    z = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="astroid"):
        pretrain.source_shape_mask("disc", z, z)
    with pytest.raises(ValueError, match="zigzag"):
        pretrain.source_texture("dots", z, z, 5.0, np.random.default_rng(0))


def test_weights_load_through_classifier_weights_and_rerun_reuses(tiny_cfg):
    result = pretrain.run(tiny_cfg, RunStore.for_config(tiny_cfg), progress=False)
    assert set(result) >= {"accuracy", "seconds", "weights"}
    state = torch.load(result["weights"], weights_only=True)
    assert not any(k.startswith(("backbone.", "head", "classifier", "side")) for k in state)

    model = build_model(tiny_cfg.replace(**{"classifier.weights": result["weights"]}))
    assert set(model.backbone.state_dict()) == set(state)
    for k, v in model.backbone.state_dict().items():
        torch.testing.assert_close(v, state[k])

    mtime = RunStore.for_config(tiny_cfg).path("pretrain").joinpath("weights.pt").stat().st_mtime_ns
    assert pretrain.run(tiny_cfg, RunStore.for_config(tiny_cfg), progress=False) == result
    assert RunStore.for_config(tiny_cfg).path("pretrain").joinpath("weights.pt").stat().st_mtime_ns == mtime


def test_wrong_architecture_fails_clearly(tiny_cfg):
    weights = pretrain.run(tiny_cfg, RunStore.for_config(tiny_cfg), progress=False)["weights"]
    other = tiny_cfg.replace(**{"classifier.channels": "[16, 32]", "classifier.weights": weights})
    with pytest.raises(ValueError, match="does not fit"):
        build_model(other)


def test_pretrain_hash_follows_architecture_not_benchmark(tiny_cfg):
    h = stage_hash(tiny_cfg, "pretrain")
    assert stage_hash(tiny_cfg.replace(**{"synth.train": 10}), "pretrain") == h
    assert stage_hash(tiny_cfg.replace(**{"pretrain.epochs": 2}), "pretrain") != h
    assert stage_hash(tiny_cfg.replace(**{"classifier.channels": "[16, 32]"}), "pretrain") != h


def test_pretrain_feeds_the_classifier_only_when_enabled():
    from cpmc_lib.config import Config

    cfg = Config().replace(**{"pretrain.enabled": False})
    on = cfg.replace(**{"pretrain.enabled": True})
    assert stage_hash(on, "classifier") != stage_hash(cfg, "classifier")
    assert stage_hash(on, "cams") != stage_hash(cfg, "cams")
    # disabled: its settings do not touch the classifier's cache key
    assert stage_hash(cfg.replace(**{"pretrain.epochs": 1}), "classifier") == stage_hash(cfg, "classifier")
    # an explicit weights file wins over the stand-in
    explicit = on.replace(**{"classifier.weights": "w.pt"})
    assert stage_hash(explicit, "classifier") == stage_hash(
        explicit.replace(**{"pretrain.epochs": 1}), "classifier"
    )
    # so do real ImageNet weights (VOC / COCO configs)
    online = on.replace(**{"classifier.pretrained": True})
    assert not online.uses_pretrain_stage()
    # the pretrain stage's own key ignores the switch: turning it on reuses weights made while off
    assert stage_hash(on, "pretrain") == stage_hash(cfg, "pretrain")


def test_segmentation_backbone_starts_from_the_stand_in(tiny_cfg, monkeypatch):
    """Both segmentation networks load the stand-in's weights into their backbone before training."""
    from cpmc_lib import segmentation
    from cpmc_lib.models import build_segnet

    c = tiny_cfg.classifier  # the stand-in has the classifier's backbone
    tiny_cfg = tiny_cfg.replace(**{"segmentation.layers": list(c.layers), "segmentation.channels": list(c.channels)})
    weights = pretrain.run(tiny_cfg, RunStore.for_config(tiny_cfg), progress=False)["weights"]
    state = torch.load(weights, weights_only=True)
    seen = {}

    def fake_train(cfg, out, device, label_dir=None, progress=True, init=None):
        seen["init"] = init
        model = build_segnet(cfg)
        from cpmc_lib.models import load_weights

        load_weights(model, init)
        seen["backbone"] = model.backbone.state_dict()
        return {"val_miou": 0.0}

    monkeypatch.setattr(segmentation, "train", fake_train)
    segmentation.run_gt(tiny_cfg, RunStore.for_config(tiny_cfg), progress=False)
    assert seen["init"] == Path(weights)
    for k, v in seen["backbone"].items():
        torch.testing.assert_close(v, state[k])
    # from scratch when switched off, and the switch is part of the cache key
    seen.clear()
    off = tiny_cfg.replace(**{"segmentation.stand_in": False})
    assert stage_hash(off, "segmentation_gt") != stage_hash(tiny_cfg, "segmentation_gt")
    assert stage_hash(tiny_cfg.replace(**{"pretrain.epochs": 2}), "segmentation_gt") != stage_hash(
        tiny_cfg, "segmentation_gt"
    )
    monkeypatch.setattr(segmentation, "train", lambda *a, init=None, **k: seen.update(init=init) or {})
    segmentation.run_gt(off, RunStore.for_config(off), progress=False)
    assert seen["init"] is None


def test_segmentation_backbone_other_than_the_classifier_fails_clearly(
    tiny_cfg, tmp_path, fake_synth_root, monkeypatch
):
    from cpmc_lib import segmentation

    weights = pretrain.run(tiny_cfg, RunStore.for_config(tiny_cfg), progress=False)["weights"]
    # a dataset of its own: the training set is read before the weights are loaded
    other = tiny_cfg.replace(
        **{"segmentation.channels": "[16, 32]", "data.root": str(fake_synth_root), "data.num_classes": 4}
    )
    with pytest.raises(ValueError, match=r"does not fit.*segmentation.stand_in=false"):
        segmentation.train(other, tmp_path, torch.device("cpu"), progress=False, init=weights)
