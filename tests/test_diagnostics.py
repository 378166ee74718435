"""Tests of cpmc_lib.diagnostics on hand-built images whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cpmc_lib.diagnostics import LabelPathologyMeter, PathologyMeter, fn_fp_fractions
from cpmc_lib.metrics import cam_to_mask
from cpmc_lib.synth import BODY, CONTEXT_PRESENT, DISTRACTOR, NEUTRAL, PART


def hand_image():
    """A 4x6 image of class 2 (keys [2, 5]): body, part, context and neutral pixels.

    Row 0: body (4 px) | border (2 px)
    Row 1: body (4 px) | part (2 px)
    Row 2: context (6 px)
    Row 3: neutral (6 px)
    The class-2 map is 1.0 on the left half of the body and 0.0 on the right half, 1.0 on the part,
    0.5 on context and 0.1 on neutral background; the class-5 map is 0.05 everywhere.
    """
    gt = np.zeros((4, 6), np.int64)
    gt[:2, :] = 2
    gt[0, 4:] = 255
    diag = np.full((4, 6), NEUTRAL)
    diag[:2, :4] = BODY
    diag[1, 4:] = PART
    diag[0, 4:] = 255
    diag[2] = CONTEXT_PRESENT
    cam = np.zeros((2, 4, 6), np.float32)
    cam[0, :2, :2] = 1.0
    cam[0, 1, 4:] = 1.0
    cam[0, 2] = 0.5
    cam[0, 3] = 0.1
    cam[1] = 0.05
    return torch.from_numpy(cam), [2, 5], gt, diag


def test_pathology_meter_on_a_hand_image():
    cam, keys, gt, diag = hand_image()
    meter = PathologyMeter(threshold=0.3)
    meter.update(cam, keys, gt, diag)
    r = meter.compute()
    assert r["n_body"] == 8 and r["n_part"] == 2 and r["n_context"] == 6 and r["n_neutral"] == 6
    assert r["recall_body"] == pytest.approx(50.0)  # the body is half activated
    assert r["recall_part"] == pytest.approx(100.0)
    assert r["act_body"] == pytest.approx(0.5)
    assert r["act_part"] == pytest.approx(1.0)
    assert r["act_context"] == pytest.approx(0.5)
    assert r["act_neutral"] == pytest.approx(0.1)
    assert r["fp_context"] == pytest.approx(100.0)  # 0.5 > 0.3: context is called class 2
    assert r["fp_neutral"] == pytest.approx(0.0)
    # codes without pixels are NaN, not 0
    assert math.isnan(r["act_distractor"]) and math.isnan(r["fp_distractor"]) and r["n_distractor"] == 0
    assert math.isnan(r["recall_atypical"]) and math.isnan(r["act_absent_context"])

    # above the context activation the false positives vanish; the statistics add up over images
    meter = PathologyMeter(threshold=0.6)
    meter.update(cam, keys, gt, diag)
    meter.update(cam, keys, gt, diag)
    r = meter.compute()
    assert r["fp_context"] == 0.0 and r["n_body"] == 16 and r["recall_body"] == pytest.approx(50.0)


def test_pathology_meter_own_class_activation():
    # The body belongs to class 5 here: its activation must be read from the class-5 map,
    # not from the highest map (class 2 fires on it at 0.9).
    cam, _keys, gt, diag = hand_image()
    gt = np.where(gt == 2, 5, gt)
    cam[0, :2, :4] = 0.9
    cam[1, :2, :4] = 0.2
    meter = PathologyMeter(threshold=0.3)
    meter.update(cam, [2, 5], gt, diag)
    r = meter.compute()
    assert r["act_body"] == pytest.approx(0.2)
    assert r["recall_body"] == 0.0  # predicted as class 2: wrong class


def test_distractor_activation_is_max_over_maps():
    diag = np.array([[DISTRACTOR, DISTRACTOR]])
    gt = np.zeros((1, 2), np.int64)
    cam = torch.tensor([[[0.2, 0.7]], [[0.4, 0.1]]])
    meter = PathologyMeter(threshold=0.5)
    meter.update(cam, [1, 3], gt, diag)
    r = meter.compute()
    assert r["act_distractor"] == pytest.approx((0.4 + 0.7) / 2)
    assert r["fp_distractor"] == pytest.approx(50.0)


def test_fn_fp_fractions_by_hand():
    gt = np.array([[1, 1, 1, 1, 255], [0, 0, 0, 0, 0]])
    pred_a = np.array([[1, 1, 1, 0, 0], [0, 0, 1, 1, 0]])
    pred_b = np.array([[1, 0, 2, 0, 1], [1, 0, 1, 0, 0]])
    r = fn_fp_fractions(pred_a, pred_b, gt)
    # object pixels 4; A right at 3 of them; B misses 2 of those ((0,1) -> 0, (0,2) -> 2).
    # (0,3) is missed by both: not a failure relative to A.
    assert r["n_object"] == 4 and r["n_fn"] == 2 and r["fn"] == pytest.approx(50.0)
    # background 5; B foreground at (1,0) and (1,2); only (1,0) is background for A.
    assert r["n_background"] == 5 and r["n_fp"] == 1 and r["fp"] == pytest.approx(20.0)
    # the ignore pixel (0,4) counts nowhere, even though B calls it class 1
    assert math.isnan(fn_fp_fractions(pred_a[1:], pred_b[1:], gt[1:])["fn"])


def test_label_meter_agrees_with_the_cam_meter_on_the_cams_mask():
    cam, keys, gt, diag = hand_image()
    cams, labels = PathologyMeter(0.3), LabelPathologyMeter()
    cams.update(cam, keys, gt, diag)
    labels.update(cam_to_mask(cam, keys, 0.3), gt, diag)
    got, want = labels.compute(), cams.compute()
    assert set(got) == {k for k in want if not k.startswith("act_")}
    for key, value in got.items():
        assert value == pytest.approx(want[key], nan_ok=True), key
    assert got["recall_body"] == 50.0 and got["fp_context"] == 100.0  # the hand image's answers


def test_label_meter_counts_ignored_pixels_as_neither_right_nor_object():
    _, _, gt, diag = hand_image()
    pred = np.where(gt == 255, 0, gt)
    pred[2, :3] = 255  # half the context ignored, the other half labelled background
    pred[0, :2] = 255  # half the body row 0 ignored
    meter = LabelPathologyMeter()
    meter.update(pred, gt, diag)
    out = meter.compute()
    assert out["fp_context"] == 0.0 and out["recall_body"] == 75.0
    assert meter.pixels == 22  # 24 pixels less the two border pixels (code 255)
    with pytest.raises(ValueError, match="shapes differ"):
        meter.update(pred[:2], gt, diag)
