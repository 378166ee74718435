"""Tests of cpmc_lib.crf: the CRF follows image edges, kernel scaling, parallel map."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cpmc_lib.config import CrfConfig
from cpmc_lib.crf import crf_labels, crf_map, dense_crf, kernel_params, parallel_map
from cpmc_lib.metrics import miou


def two_colour_case(size: int = 48, edge: int = 24, blur_centre: int = 17):
    """A red | blue image split at column ``edge`` and soft probabilities whose 0.5 crossing is
    at ``blur_centre`` (a blurred, shifted CAM boundary). Returns img, probs (2, H, W), gt."""
    img = np.zeros((size, size, 3), np.uint8)
    img[:, :edge] = (200, 30, 30)
    img[:, edge:] = (30, 30, 200)
    gt = np.zeros((size, size), np.int64)
    gt[:, edge:] = 1
    x = np.arange(size, dtype=np.float32)
    p1 = 1 / (1 + np.exp(-(x - blur_centre) / 6.0))  # soft ramp of class 1
    p1 = np.broadcast_to(p1, (size, size))
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    return img, probs, gt


@pytest.mark.parametrize(
    ("size", "size_ref"),
    [(48, 0), (128, 500)],  # IRN's pixel values on a small image; scaled values at the synthetic size
)
def test_crf_moves_a_blurred_boundary_to_the_colour_edge(size, size_ref):
    # The soft boundary lies 7-8 px (one CAM stride) left of the colour edge.
    img, probs, gt = two_colour_case(size, size // 2, size // 2 - 7)
    cfg = CrfConfig(size_ref=size_ref, workers=0)
    before = miou([probs.argmax(0)], [gt], 2)["miou"]
    after = miou([crf_labels(img, probs, cfg)], [gt], 2)["miou"]
    assert before < 92
    assert after > 99


def test_dense_crf_is_a_distribution_and_zero_iterations_keep_the_probs():
    img, probs, _ = two_colour_case(16, 8, 6)
    post = dense_crf(img, probs, CrfConfig())
    assert post.shape == probs.shape and post.dtype == np.float32
    np.testing.assert_allclose(post.sum(0), 1.0, atol=1e-4)
    np.testing.assert_allclose(dense_crf(img, probs, CrfConfig(iterations=0)), probs, atol=1e-4)


def test_crf_labels_map_channels_to_keys():
    img, probs, _ = two_colour_case(16, 8, 8)
    labels = crf_labels(img, probs, CrfConfig(), keys=[0, 7])
    assert set(np.unique(labels)) == {0, 7}


def test_kernel_params_scale_with_the_long_side():
    cfg = CrfConfig()  # IRN's values, meant for 500 px
    assert kernel_params(cfg, (375, 500)) == {
        "gaussian_sxy": 3.0,
        "bilateral_sxy": 50.0,
        "bilateral_srgb": 5.0,
    }
    small = kernel_params(cfg, (128, 128))
    assert small["bilateral_sxy"] == pytest.approx(50 * 128 / 500)
    assert small["gaussian_sxy"] == pytest.approx(3 * 128 / 500)
    assert kernel_params(dataclasses.replace(cfg, size_ref=0), (128, 128))["bilateral_sxy"] == 50.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same H, W"):
        dense_crf(np.zeros((4, 5, 3), np.uint8), np.full((2, 4, 4), 0.5), CrfConfig())


def test_crf_map_in_two_processes_equals_the_serial_result():
    cases = [two_colour_case(24, 12, c) for c in (6, 9, 14, 17, 10, 3, 20, 11, 8, 15)]
    items = [(img, probs, f"img{i}") for i, (img, probs, _) in enumerate(cases)]
    serial = list(crf_map(iter(items), CrfConfig(workers=0), progress=False))
    pooled = list(crf_map(iter(items), CrfConfig(workers=2), total=len(items), progress=False))
    assert [tag for _, tag in pooled] == [f"img{i}" for i in range(len(items))]  # more than the window of 8
    for (a, _), (b, _), (img, probs, _) in zip(serial, pooled, items, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
        np.testing.assert_allclose(a, dense_crf(img, probs, CrfConfig()), atol=1e-6)


def test_parallel_map_keeps_order_in_process():
    assert list(parallel_map(abs, iter([-3, 1, -2]), workers=0, progress=False)) == [3, 1, 2]
