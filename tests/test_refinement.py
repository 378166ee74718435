"""Tests of cpmc_lib.refinement: classifier CAM and context refinement, on hand-made tensors."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from cpmc_lib.refinement import (
    classifier_cam,
    context_features,
    pixel_affinity,
    refine_with_context,
)


def test_classifier_cam_by_hand():
    raw = torch.tensor([[[[2.0, -1.0], [1.0, 0.0]], [[5.0, 5.0], [5.0, 5.0]]]])  # (1, 2, 2, 2)
    cam = classifier_cam(raw, torch.tensor([[1.0, 0.0]]))
    assert cam.shape == (1, 3, 2, 2)
    assert_close(cam[0, 1], torch.tensor([[1.0, 0.0], [0.5, 0.0]]), atol=1e-4, rtol=0)
    assert torch.equal(cam[0, 2], torch.zeros(2, 2))  # absent class: exactly 0
    assert_close(cam[0, 0], 1 - cam[0, 1])  # background = 1 - max over classes


def test_affinity_rows_sum_to_one_and_are_relu_cosine():
    feat = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]).T.reshape(1, 2, 1, 3)  # 3 pixels
    aff = pixel_affinity(feat)
    assert aff.shape == (1, 3, 3)
    assert_close(aff.sum(-1), torch.ones(1, 3), atol=1e-4, rtol=0)
    # Pixel 0 is orthogonal to pixel 1 and opposite to pixel 2: only itself has weight.
    assert_close(aff[0, 0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-4, rtol=0)


def test_affinity_power_sharpens():
    feat = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).T.reshape(1, 2, 1, 2)  # cos = 0.707
    w1, w8 = pixel_affinity(feat, 1.0)[0, 0, 1], pixel_affinity(feat, 8.0)[0, 0, 1]
    assert_close(w1, torch.tensor(0.7071 / 1.7071), atol=1e-3, rtol=0)
    assert w8 < w1


def test_refinement_of_constant_map_is_identity():
    cam = torch.full((2, 3, 4, 4), 0.4)
    aff = pixel_affinity(torch.randn(2, 5, 4, 4), power=3.0)
    assert_close(refine_with_context(cam, aff, 3), cam, atol=1e-4, rtol=0)


def test_refinement_keeps_absent_classes_zero_and_is_a_convex_combination():
    torch.manual_seed(0)
    raw = torch.randn(2, 3, 5, 5)
    label = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    cam = classifier_cam(raw, label)
    refined = refine_with_context(cam, pixel_affinity(torch.randn(2, 6, 5, 5)), 2)
    assert torch.equal(refined[0, 2], torch.zeros(5, 5)) and torch.equal(refined[1, 1], torch.zeros(5, 5))
    assert refined.max() <= cam.max() + 1e-5 and refined.min() >= 0


def test_refinement_spreads_along_similar_features_only():
    # Pixels 0-1 share a feature, pixels 2-3 another; the CAM fires on pixel 0 only.
    feat = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 4)
    cam = torch.tensor([1.0, 0.0, 0.0, 0.0]).reshape(1, 1, 1, 4)
    out = refine_with_context(cam, pixel_affinity(feat), 1)
    assert_close(out.flatten(), torch.tensor([0.5, 0.5, 0.0, 0.0]), atol=1e-4, rtol=0)


def test_context_sources():
    feat, hie = torch.randn(1, 4, 4, 4), torch.randn(1, 6, 4, 4)
    stages = [torch.randn(1, 2, 16, 16), torch.randn(1, 3, 8, 8), feat]
    img = torch.randn(1, 3, 32, 32)
    assert context_features("stages", feat, stages).shape == (1, 9, 4, 4)
    assert context_features("image+feat", feat, img=img).shape == (1, 7, 4, 4)
    assert context_features("hie", feat, hie=hie) is hie
    with pytest.raises(ValueError, match="sources"):
        context_features("nope", feat, stages)
