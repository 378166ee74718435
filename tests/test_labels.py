"""Tests of cpmc_lib.labels: the pseudo-label rules of one image (IRN's rule, the ignore zone, Otsu, parts)."""

from __future__ import annotations

import numpy as np
import pytest

from cpmc_lib import labels
from cpmc_lib.config import Config
from cpmc_lib.metrics import cam_to_mask


def test_ignore_zone_hand_case():
    # Two classes (3, 7) on a row of five pixels.
    cam = np.array(
        [
            [[0.90, 0.20, 0.02, 0.00, 0.40]],  # class 3
            [[0.10, 0.10, 0.03, 0.60, 0.50]],  # class 7
        ]
    )
    keys = [3, 7]
    # fg where the top map > 0.30, bg where it is <= 0.05, ignore in between.
    assert labels.pseudo_label(cam, keys, 0.30, 0.05).tolist() == [[3, 255, 0, 7, 7]]
    # One plane: no ignore.
    assert labels.pseudo_label(cam, keys, 0.15).tolist() == [[3, 3, 0, 7, 7]]
    # The band around a background plane gives the same two planes.
    assert labels.band_planes(0.25, (0.6, 1.0)) == pytest.approx((0.25, 0.15))
    assert labels.pseudo_label(cam, keys, *labels.band_planes(0.25, (0.6, 1.0))).tolist() == [[3, 255, 0, 7, 7]]


def test_planes_must_be_ordered():
    cam = np.array([[[0.9, 0.2]]])
    assert labels.pseudo_label(cam, [1], 0.3, 0.3).tolist() == labels.pseudo_label(cam, [1], 0.3).tolist()
    with pytest.raises(ValueError, match="background plane"):
        labels.pseudo_label(cam, [1], 0.2, 0.4)


def test_combine_confident_follows_irn():
    fg = np.array([[2, 0, 0, 5]])
    bg = np.array([[2, 4, 0, 0]])  # the last pixel: only a CRF can make bg say background here
    assert labels.combine_confident(fg, bg).tolist() == [[2, 255, 0, 5]]


def test_cam_probs_argmax_is_the_threshold_rule():
    rng = np.random.default_rng(0)
    cam = rng.random((3, 9, 11)).astype(np.float32)
    keys = np.array([1, 4, 6])
    probs = labels.cam_probs(cam, 0.45)
    assert probs.shape == (4, 9, 11)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-6)
    ids = np.concatenate([[0], keys])
    np.testing.assert_array_equal(ids[probs.argmax(0)], cam_to_mask(cam, keys, 0.45).numpy())


def test_otsu_threshold_by_hand():
    # Two tight groups: the cut lies between them, at a bin edge above the lower group.
    low, high = np.full(30, 0.1), np.full(10, 0.8)
    t = labels.otsu_threshold(np.concatenate([low, high]))
    assert 0.1 < t <= 0.8
    assert labels.otsu_threshold(np.full(7, 0.4)) == 1.0  # nothing to split: all background
    assert labels.otsu_threshold(np.array([])) == 1.0


def test_image_threshold_adapts_per_image():
    # The same object on a weak and on a strong background: a fixed plane fits one of them,
    # Otsu's cut follows each image's own values.
    weak = np.array([[[0.05, 0.1, 0.9, 0.95]]], np.float32)
    strong = np.array([[[0.5, 0.55, 0.9, 0.95]]], np.float32)
    assert labels.image_threshold(weak, "fixed", 0.3) == 0.3 == labels.image_threshold(strong, "fixed", 0.3)
    for cam in (weak, strong):
        thr = labels.image_threshold(cam, "otsu")
        assert labels.pseudo_label(cam, [2], thr).tolist() == [[0, 0, 2, 2]]
    assert labels.pseudo_label(strong, [2], 0.3).tolist() == [[2, 2, 2, 2]]  # the fixed plane fails here
    assert labels.image_threshold(np.zeros((0, 1, 4), np.float32), "otsu") == 1.0  # no class: background
    with pytest.raises(ValueError, match="per-image"):
        labels.image_threshold(weak, "oracle")


def test_rule_threshold_reads_no_ground_truth_unless_oracle():
    cfg = Config()
    assert labels.rule_threshold(cfg.replace(**{"pseudo.threshold_rule": "otsu"})) is None
    fixed = cfg.replace(**{"pseudo.threshold_rule": "fixed", "pseudo.bg_threshold": 0.35})
    assert labels.rule_threshold(fixed, {"threshold": 0.9}) == 0.35  # the metrics are not read
    assert (
        labels.rule_threshold(cfg.replace(**{"pseudo.threshold_rule": "oracle"}), {"threshold": 0.9}) == 0.9
    )
    with pytest.raises(ValueError, match="pseudo.bg_threshold"):
        labels.rule_threshold(fixed.replace(**{"pseudo.bg_threshold": 0.0}))


def test_band_planes_follow_the_image_threshold():
    assert labels.band_planes(0.4, (1.0, 1.0)) == (0.4, 0.4)
    fg, bg = labels.band_planes(0.2, (0.5, 2.0))
    assert (fg, bg) == pytest.approx((0.4, 0.1))
    assert labels.band_planes(0.8, (0.5, 2.0))[0] == pytest.approx(0.9)  # below every map's peak
    assert labels.band_planes(0.95, (0.5, 2.0))[0] == pytest.approx(0.95)  # never below the plane
    for bad in [(0.0, 1.5), (1.2, 1.5), (0.5, 0.8)]:
        with pytest.raises(ValueError, match="pseudo.band"):
            labels.band_planes(0.4, bad)


def test_describe_threshold_says_the_rule_and_never_hides_the_oracle():

    per_image = labels.describe_threshold(
        {"threshold_rule": "otsu", "threshold": None, "threshold_mean": 0.3941, "images": 20}
    )
    assert (
        per_image.startswith("background threshold per image, rule otsu")
        and "mean threshold 0.394 over the 20" in per_image
    )
    assert "oracle view" in labels.describe_threshold({"threshold_rule": "oracle", "threshold": 0.25})
    assert "0.250" in labels.describe_threshold({"threshold_rule": "oracle", "threshold": 0.25})


def test_assign_to_parts_gives_a_shared_body_to_the_nearest_part():
    # Two objects of one group side by side: both classes' maps cover both bodies (columns 0-7),
    # the arg-max gave everything to class 2; each class's classifier CAM peaks on its own part.
    cam = np.zeros((2, 3, 10), np.float32)
    cam[0, :, :8], cam[1, :, :8] = 0.7, 0.9
    part_cam = np.zeros_like(cam)
    part_cam[0, 1, 1], part_cam[1, 1, 6] = 1.0, 1.0
    part_cam[0, 1, 2] = 0.5  # below part_share of the peak: not part of the part
    label = np.full((3, 10), 2, np.uint8)
    label[:, 8:] = 0
    label[0, 3] = 255
    out = labels.assign_to_parts(label, cam, [1, 2], part_cam, 0.4, part_share=0.7, contest_share=0.5)
    nearest_1 = np.zeros((3, 10), bool)
    nearest_1[:, :4] = True  # columns 0-3 lie nearer column 1 than column 6
    assert (out[nearest_1 & (label == 2)] == 1).all() and (out[~nearest_1 & (label == 2)] == 2).all()
    assert out[0, 3] == 255 and (out[:, 8:] == 0).all()  # ignore and background untouched
    # a pixel only one class's map reaches is not contested: its label stays
    cam[0, 0, 0] = 0.1
    assert labels.assign_to_parts(label, cam, [1, 2], part_cam, 0.4)[0, 0] == 2
    # one class, or no class whose part exists: nothing to decide
    assert (labels.assign_to_parts(label, cam[:1], [2], part_cam[:1], 0.4) == label).all()
    assert (labels.assign_to_parts(label, cam, [1, 2], np.zeros_like(cam), 0.4) == label).all()
    with pytest.raises(ValueError, match="do not match"):
        labels.assign_to_parts(label, cam, [1, 2], part_cam[:, :2], 0.4)


def test_otsu_cut_of_summed_histograms_is_the_cut_of_the_pooled_values():
    from cpmc_lib.labels import otsu_cut, otsu_threshold

    rng = np.random.default_rng(0)
    a, b = rng.beta(2, 5, size=(32, 32)), rng.beta(5, 2, size=(16, 16))
    hist = lambda v: np.bincount(np.minimum((v.ravel() * 64).astype(int), 63), minlength=64)  # noqa: E731
    pooled = np.concatenate([a.ravel(), b.ravel()])
    assert otsu_cut(hist(a) + hist(b)) == otsu_threshold(pooled) != otsu_threshold(a)
    assert otsu_cut(np.zeros(64)) == 1.0
