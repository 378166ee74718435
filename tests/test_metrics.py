"""Tests of cpmc_lib.metrics: parity with a plain-numpy confusion matrix and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cpmc_lib.metrics import (
    CamEvaluator,
    ConfusionMeter,
    cam_to_mask,
    classification_metrics,
    confusion_matrix,
    default_thresholds,
    iou_from_confusion,
    miou,
)


def naive_confusion(pred: np.ndarray, gt: np.ndarray, k: int) -> np.ndarray:
    """Reference: count pixel by pixel, skipping gt == 255."""
    conf = np.zeros((k, k), np.int64)
    for p, g in zip(pred.ravel(), gt.ravel(), strict=True):
        if g != 255:
            conf[g, p] += 1
    return conf


def naive_miou(conf: np.ndarray) -> float:
    ious = [
        conf[c, c] / (conf[c].sum() + conf[:, c].sum() - conf[c, c])
        for c in range(len(conf))
        if conf[c].sum() + conf[:, c].sum() > 0
    ]
    return 100 * float(np.mean(ious))


def random_pair(rng: np.random.Generator, k: int, shape=(17, 23)) -> tuple[np.ndarray, np.ndarray]:
    gt = rng.integers(0, k, shape)
    gt[rng.random(shape) < 0.1] = 255
    pred = np.where(rng.random(shape) < 0.6, np.where(gt == 255, 0, gt), rng.integers(0, k, shape))
    return pred, gt


def test_confusion_matrix_matches_naive_reference():
    rng = np.random.default_rng(0)
    for k in (2, 5, 21):
        pred, gt = random_pair(rng, k)
        conf = confusion_matrix(pred, gt, k)
        assert conf.dtype == torch.int64 and conf.shape == (k, k)
        np.testing.assert_array_equal(conf.numpy(), naive_confusion(pred, gt, k))
        # torch inputs of another integer dtype give the same matrix
        torch.testing.assert_close(
            confusion_matrix(torch.from_numpy(pred).byte(), torch.from_numpy(gt).byte(), k), conf
        )


def test_confusion_matrix_matches_torchmetrics():
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    pred, gt = random_pair(np.random.default_rng(3), 7, shape=(40, 30))
    expected = multiclass_confusion_matrix(torch.from_numpy(pred), torch.from_numpy(gt), 7, ignore_index=255)
    torch.testing.assert_close(confusion_matrix(pred, gt, 7), expected.long())


def test_miou_accumulates_dataset_wide():
    rng = np.random.default_rng(1)
    pairs = [random_pair(rng, 6, shape=(5 + i, 9)) for i in range(4)]
    total = sum(naive_confusion(p, g, 6) for p, g in pairs)
    result = miou([p for p, _ in pairs], [g for _, g in pairs], 6)
    assert result["miou"] == pytest.approx(naive_miou(total))
    # a per-image average would differ: the protocol is dataset-wide
    per_image = np.mean([naive_miou(naive_confusion(p, g, 6)) for p, g in pairs])
    assert result["miou"] != pytest.approx(per_image)
    meter = ConfusionMeter(6)
    for p, g in pairs:
        meter.update(p, g)
    np.testing.assert_array_equal(meter.confusion.numpy(), total)
    assert meter.compute() == result


def test_perfect_prediction_is_100():
    gt = np.array([[0, 1, 2], [2, 255, 1]])
    result = miou([np.where(gt == 255, 0, gt)], [gt], 3)
    assert result["miou"] == 100.0
    assert result["iou"] == [100.0, 100.0, 100.0]
    assert result["precision"] == result["recall"] == 100.0


def test_two_by_two_by_hand():
    gt = np.array([[0, 0], [1, 1]])
    pred = np.array([[0, 1], [1, 1]])
    # class 0: TP 1, FN 1, FP 0 -> 1/2; class 1: TP 2, FP 1, FN 0 -> 2/3
    result = iou_from_confusion(confusion_matrix(pred, gt, 2))
    assert result["iou"] == pytest.approx([50.0, 200 / 3])
    assert result["miou"] == pytest.approx((50 + 200 / 3) / 2)


def test_absent_classes_are_excluded_from_the_mean():
    gt = np.array([[0, 0], [1, 1]])
    result = miou([gt], [gt], 5)  # classes 2..4 appear in neither gt nor prediction
    assert result["miou"] == 100.0
    assert all(math.isnan(v) for v in result["iou"][2:])
    # a class only predicted (a false positive) counts, with IoU 0
    pred = np.array([[0, 3], [1, 1]])
    result = miou([pred], [gt], 5)
    assert result["iou"][3] == 0.0
    assert result["miou"] == pytest.approx((50 + 100 + 0) / 3)


def test_ignore_pixels_are_excluded():
    gt = np.array([[0, 255], [1, 255]])
    pred = np.array([[0, 1], [1, 0]])  # wrong only where gt is ignored
    assert miou([pred], [gt], 2)["miou"] == 100.0
    assert int(confusion_matrix(pred, gt, 2).sum()) == 2


def test_out_of_range_labels_raise():
    with pytest.raises(ValueError, match="pred"):
        confusion_matrix(np.array([[255]]), np.array([[0]]), 2)
    with pytest.raises(ValueError, match="gt"):
        confusion_matrix(np.array([[0]]), np.array([[7]]), 2)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 2)


def test_precision_recall_with_known_fp_and_fn():
    gt = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 0, 1, 2], [1, 1, 1, 0], [2, 1, 0, 0]])
    # gt fg = 6 pixels; TP fg = 3 (class 1) + 1 (class 2) = 4; predicted fg = 2 + 3 + 2 = 7
    result = miou([pred], [gt], 3)
    assert result["recall"] == pytest.approx(100 * 4 / 6)
    assert result["precision"] == pytest.approx(100 * 4 / 7)


def test_cam_to_mask_by_hand():
    cam = torch.tensor(
        [
            [[0.9, 0.1, 0.4], [0.3, 0.2, 0.0]],  # class 3
            [[0.2, 0.8, 0.5], [0.3, 0.25, 0.0]],  # class 7
        ]
    )
    mask = cam_to_mask(cam, [3, 7], 0.25)
    # (1, 0): tie between the classes goes to the first key; (1, 1): 0.25 ties the plane -> bg
    expected = torch.tensor([[3, 7, 7], [3, 0, 0]])
    torch.testing.assert_close(mask, expected)
    assert mask.dtype == torch.int64
    torch.testing.assert_close(
        cam_to_mask(cam.numpy(), np.array([3, 7]), 0.95), torch.zeros(2, 3, dtype=torch.long)
    )
    # no class present: all background
    assert cam_to_mask(torch.zeros(0, 2, 3), [], 0.1).sum() == 0


def test_default_thresholds():
    t = default_thresholds(0.05)
    assert len(t) == 19 and t[0] == 0.05 and t[-1] == 0.95
    assert default_thresholds(0.25) == [0.25, 0.5, 0.75]


def test_cam_evaluator_finds_the_known_threshold():
    gt = torch.zeros(8, 8, dtype=torch.long)
    gt[2:6, 2:6] = 4
    gt[0, 0] = 255
    cam = torch.full((1, 8, 8), 0.3)
    cam[0, 2:6, 2:6] = 0.7
    ev = CamEvaluator(5)
    ev.update(cam, [4], gt)
    result = ev.compute()
    curve = dict((round(t, 2), m) for t, m in result["curve"])
    assert len(curve) == 19
    assert all(curve[t] == 100.0 for t in curve if 0.3 <= t < 0.7)  # 0.3 ties the plane -> bg
    assert all(curve[t] < 100.0 for t in curve if t < 0.3 or t >= 0.7)
    assert result["miou"] == 100.0 and 0.3 <= result["threshold"] < 0.7
    assert result["precision"] == result["recall"] == 100.0
    # below 0.3 everything is class 4: bg IoU 0, class-4 IoU 16/63
    assert curve[0.1] == pytest.approx((0 + 100 * 16 / 63) / 2)
    # from 0.7 on everything is background: bg IoU 47/63, class 4 IoU 0
    assert curve[0.8] == pytest.approx((100 * 47 / 63 + 0) / 2)


def test_cam_evaluator_matches_per_threshold_cam_to_mask():
    rng = np.random.default_rng(2)
    k, thresholds = 6, [0.1, 0.25, 0.5, 0.6, 0.9]
    ev = CamEvaluator(k, thresholds=thresholds)
    meters = [ConfusionMeter(k) for _ in thresholds]
    for i in range(5):
        keys = rng.choice(np.arange(1, k), size=i % 3, replace=False)
        cam = torch.from_numpy(rng.random((len(keys), 9, 11)).astype(np.float32))
        gt = rng.integers(0, k, (9, 11))
        gt[rng.random((9, 11)) < 0.1] = 255
        ev.update(cam, keys, gt)
        for t, meter in zip(thresholds, meters, strict=True):
            meter.update(cam_to_mask(cam, keys, t), gt)
    for conf, meter in zip(ev.confusions(), meters, strict=True):
        torch.testing.assert_close(conf, meter.confusion)
    result = ev.compute()
    best = max(range(len(thresholds)), key=lambda i: meters[i].compute()["miou"])
    assert result["threshold"] == thresholds[best]
    assert result["miou"] == pytest.approx(meters[best].compute()["miou"])


def test_classification_metrics_by_hand():
    scores = torch.tensor([[2.0, -1.0, -1.0], [-1.0, 1.0, -2.0], [0.5, -0.5, -3.0], [-2.0, 3.0, 0.2]])
    labels = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 1, 0]])
    result = classification_metrics(scores, labels)
    # class 0: positives ranked 1st and 2nd -> AP 1; class 1: scores 3, 1, -0.5 for positives,
    # -1 for the negative -> AP 1; class 2 has no positive and is left out of the mAP.
    assert result["mAP"] == pytest.approx(100.0)
    # F1: class 0 TP 2 -> 1; class 1 TP 2, FN 1 -> 4/5; class 2 FP 1 -> 0 (predicted, so it counts)
    assert result["F1"] == pytest.approx(100 * (1 + 0.8 + 0) / 3)
    # a ranking error lowers the AP: class 0 positive ranked below a negative
    scores2 = torch.tensor([[0.1], [0.5], [-1.0]])
    labels2 = torch.tensor([[1], [0], [0]])
    assert classification_metrics(scores2, labels2)["mAP"] == pytest.approx(50.0)
    # F1: TP 1 (0.1 > 0), FP 1 -> 2/3
    assert classification_metrics(scores2, labels2)["F1"] == pytest.approx(100 * 2 / 3)
