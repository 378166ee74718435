"""Tests of cpmc_lib.prototypes: seeds, masked-average prototypes and the prototype CAM."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from cpmc_lib.prototypes import (
    cluster_prototypes,
    cosine_activation,
    masked_average,
    prototype_cam,
    prototype_seeds,
    prototype_set_cam,
    structure_aware_seeds,
)


def _cam(bg, c1, c2=None):
    """(1, K, 1, N) CAM from per-pixel lists."""
    rows = [bg, c1] + ([c2] if c2 is not None else [])
    return torch.tensor(rows, dtype=torch.float32)[None, :, None, :]


def test_argmax_seeds_scale_background_and_respect_labels():
    cam = _cam([0.5, 0.5, 0.9], [0.2, 0.1, 0.0], [0.3, 0.0, 0.0])
    # bg x 0.3 = 0.15: pixel 0 -> class 2 (0.3), pixel 1 -> bg (0.15 > 0.1), pixel 2 -> bg.
    seeds = prototype_seeds(cam, torch.tensor([[1.0, 1.0]]), "argmax", bg_factor=0.3)
    assert seeds[0, :, 0].int().tolist() == [[0, 1, 1], [0, 0, 0], [1, 0, 0]]
    # Class 2 absent: its seeds vanish, pixel 0 is not reassigned.
    seeds = prototype_seeds(cam, torch.tensor([[1.0, 0.0]]), "argmax", bg_factor=0.3)
    assert not seeds[0, 2].any()


def test_threshold_and_quantile_seeds():
    fg = [1.0, 0.9, 0.6, 0.3, 0.1, 0.0]
    cam = _cam([1 - v for v in fg], fg)
    label = torch.tensor([[1.0]])
    s = prototype_seeds(cam, label, "threshold", bg_factor=1.0, fg_threshold=0.8, bg_threshold=0.2)
    assert s[0, 1, 0].int().tolist() == [1, 1, 0, 0, 0, 0] and s[0, 0, 0].int().tolist() == [0, 0, 0, 0, 1, 1]
    # Class area (bg x 1): pixels 0-2; top half by value -> pixels 0, 1 (>= median of area 0.9).
    s = prototype_seeds(cam, label, "quantile", bg_factor=1.0, fg_quantile=0.5, bg_quantile=0.3)
    assert s[0, 1, 0].int().tolist() == [1, 1, 0, 0, 0, 0]
    assert s[0, 0, 0].int().tolist() == [0, 0, 0, 0, 1, 1]  # lowest 30 % of the image


def test_masked_average_and_prototype_cam_by_hand():
    feat = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [1.0, 1.0]]).T.reshape(1, 2, 1, 4)
    seeds = torch.tensor([[0, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool).reshape(1, 3, 1, 4)
    protos = masked_average(feat, seeds)
    assert_close(protos[0], torch.tensor([[0.0, 2.0], [2.0, 0.0], [0.0, 0.0]]))
    cam = prototype_cam(feat, seeds)
    assert_close(cam[0, 1, 0], torch.tensor([1.0, 1.0, 0.0, 0.7071]), atol=1e-4, rtol=0)
    assert torch.equal(cam[0, 2], torch.zeros(1, 4))  # empty seed -> zero prototype -> 0


def test_cosine_activation_clips_negatives():
    feat = torch.tensor([[-1.0, 0.0]]).T.reshape(1, 2, 1, 1)
    assert cosine_activation(feat, torch.tensor([[[1.0, 0.0]]])).item() == 0.0


def test_structure_aware_seeds_follow_feature_groups():
    # Two feature groups; the CAM fires on one pixel of group A only.
    feat = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3).T.reshape(1, 2, 1, 6)
    fg = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    cam = _cam([1 - v for v in fg], fg)
    seeds = structure_aware_seeds(cam, feat, torch.tensor([[1.0]]), bg_factor=0.5)
    assert seeds[0, 1, 0].int().tolist() == [1, 1, 1, 0, 0, 0]


def test_cluster_prototypes_find_two_modes_and_skip_small_regions():
    a, b = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    feat = torch.tensor([a, a, a, b, b, b]).T.reshape(1, 3, 1, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], dtype=torch.bool).reshape(1, 2, 1, 6)
    proto, valid = cluster_prototypes(feat, mask, max_clusters=2, min_size=2)
    assert valid[0].tolist() == [[True, True], [False, False]]
    got = sorted(tuple(p.tolist()) for p in proto[0, 0])
    assert got == [tuple(b), tuple(a)]
    act = prototype_set_cam(feat, proto, valid)
    assert_close(act[0, 0], torch.ones(1, 6))  # each pixel matches one of its class's modes
    assert torch.equal(act[0, 1], torch.zeros(1, 6))


def test_unknown_rule():
    with pytest.raises(ValueError, match="rules"):
        prototype_seeds(torch.zeros(1, 2, 2, 2), torch.ones(1, 1), "nope")
