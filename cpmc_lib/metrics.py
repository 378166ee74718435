"""The yardstick of the book: one mIoU for CAMs, pseudo labels and segmentation, plus classifier metrics.

Every score in the book goes through :func:`confusion_matrix` -> :func:`iou_from_confusion`, the
standard protocol of IRN/chainercv (method notes §3.4): one confusion matrix summed over all pixels
of all images (ground-truth pixels equal to :data:`~cpmc_lib.io.IGNORE_INDEX` are skipped), then

.. math:: \\mathrm{IoU}_c = \\frac{TP_c}{TP_c + FP_c + FN_c}, \\qquad
          \\mathrm{mIoU} = \\operatorname{nanmean}_c \\mathrm{IoU}_c

with background included and classes that appear in neither ground truth nor prediction left out.

CAMs are scored like IRN's ``eval_cam`` (§3.3): a constant background plane of value ``threshold``
is prepended to the image's normalised class maps and the argmax is taken; :class:`CamEvaluator`
sweeps the threshold and reports the best one.

Shapes: ``K`` counts background (``K = 11`` for the synthetic benchmark, 21 for VOC); ``k`` is the
number of classes present in one image; ``C = K - 1`` foreground classes for the classifier.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_average_precision,
    binary_f1_score,
)

from .io import IGNORE_INDEX

__all__ = [
    "CamEvaluator",
    "ConfusionMeter",
    "cam_to_mask",
    "classification_metrics",
    "confusion_matrix",
    "default_thresholds",
    "iou_from_confusion",
    "json_iou",
    "miou",
]

ArrayLike = torch.Tensor | np.ndarray


def _numpy(x: ArrayLike, dtype: type) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(dtype, copy=False)


def _histogram(index: np.ndarray, valid: np.ndarray, size: int) -> np.ndarray:
    """Counts of ``index`` in ``0..size-1`` over the ``valid`` pixels (int64, flat)."""
    # Invalid pixels go to one extra bin that is dropped: cheaper than boolean indexing.
    return np.bincount(np.where(valid, index, size).ravel(), minlength=size + 1)[:size]


def confusion_matrix(pred: ArrayLike, gt: ArrayLike, num_classes: int) -> torch.Tensor:
    """Pixel confusion matrix of one mask (or a stack of masks).

    Equal to torchmetrics' ``multiclass_confusion_matrix(pred, gt, K, ignore_index=255)`` (the
    tests check it), computed by a numpy bincount: single-threaded numpy stays fast per image on a
    busy CPU, where torch's threaded kernels stall (0.2 ms vs 34 ms for a 128x128 mask on a
    2-core machine shared with other jobs; equal when idle).

    Args:
        pred: predicted class ids in ``0..K-1``, integer tensor or array of any shape.
        gt: ground-truth class ids of the same shape; pixels equal to 255 are ignored.
        num_classes: ``K``, background included.

    Returns:
        ``(K, K)`` int64 tensor on the CPU, rows = ground truth, columns = prediction.

    Raises:
        ValueError: on a shape mismatch, or a prediction or ground-truth label outside ``0..K-1``
            (a prediction holding 255 must be mapped to a class first: the protocol scores
            every non-ignored ground-truth pixel).
    """
    pred, gt = _numpy(pred, np.int64), _numpy(gt, np.int64)
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} != gt shape {gt.shape}")
    k = num_classes
    if pred.size == 0:
        return torch.zeros(k, k, dtype=torch.long)
    valid = gt != IGNORE_INDEX
    if pred.min() < 0 or pred.max() >= k:
        raise ValueError(f"pred holds labels outside 0..{k - 1}: {np.unique(pred)[:10].tolist()}")
    if gt.min() < 0 or np.where(valid, gt, 0).max() >= k:
        raise ValueError(f"gt holds labels outside 0..{k - 1} and 255: {np.unique(gt)[:10].tolist()}")
    return torch.from_numpy(_histogram(gt * k + pred, valid, k * k).reshape(k, k))


def iou_from_confusion(conf: ArrayLike) -> dict:
    """Per-class IoU, mIoU and foreground precision/recall of a confusion matrix.

    Args:
        conf: ``(K, K)`` counts, rows = ground truth, columns = prediction.

    Returns:
        dict with ``miou`` (percent; nanmean over classes present in ground truth or prediction),
        ``iou`` (list of K per-class IoUs in percent, NaN for classes absent from both),
        ``precision`` (percent of pixels predicted as foreground that carry the right class:
        ``sum_c>0 TP_c / #pred in 1..K-1``; the false-positive side) and ``recall`` (percent of
        ground-truth foreground pixels predicted as their class: ``sum_c>0 TP_c / #gt in 1..K-1``;
        the false-negative side). Ratios with a zero denominator are NaN.
    """
    conf = _numpy(conf, np.float64)
    tp = conf.diagonal()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan) * 100
    tp_fg = tp[1:].sum()
    pred_fg, gt_fg = conf[:, 1:].sum(), conf[1:, :].sum()
    return {
        "miou": float(np.nanmean(iou)) if (union > 0).any() else float("nan"),
        "iou": iou.tolist(),
        "precision": float(100 * tp_fg / pred_fg) if pred_fg > 0 else float("nan"),
        "recall": float(100 * tp_fg / gt_fg) if gt_fg > 0 else float("nan"),
    }


def json_iou(iou: Sequence[float | None]) -> list[float | None]:
    """Per-class IoUs with None, as JSON keeps it, for NaN (a class in neither prediction nor ground
    truth): a stage's result must compare equal after its JSON round trip, and NaN != NaN."""
    return [None if v is None or math.isnan(v) else v for v in iou]


class ConfusionMeter:
    """Dataset-wide confusion matrix, accumulated image by image.

    Args:
        num_classes: ``K``, background included.

    Example:
        >>> meter = ConfusionMeter(3)
        >>> meter.update(np.array([[0, 1], [2, 2]]), np.array([[0, 1], [2, 255]]))
        >>> meter.compute()["miou"]
        100.0
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)

    def update(self, pred: ArrayLike, gt: ArrayLike) -> None:
        """Add one mask (or a stack of masks); shapes as in :func:`confusion_matrix`."""
        self.confusion += confusion_matrix(pred, gt, self.num_classes)

    def compute(self) -> dict:
        """The :func:`iou_from_confusion` dict of everything seen so far."""
        return iou_from_confusion(self.confusion)


def miou(preds: Iterable[ArrayLike], gts: Iterable[ArrayLike], num_classes: int) -> dict:
    """The one mIoU of the book: CAM masks, pseudo labels and segmentation outputs alike.

    Args:
        preds: predicted masks, each ``(H, W)`` with ids in ``0..K-1`` (sizes may differ per image).
        gts: ground-truth masks paired with ``preds``, 255 = ignore.
        num_classes: ``K``, background included.

    Returns:
        The :func:`iou_from_confusion` dict of the confusion matrix summed over all images
        (dataset-wide, not a per-image average).
    """
    meter = ConfusionMeter(num_classes)
    for pred, gt in zip(preds, gts, strict=True):
        meter.update(pred, gt)
    return meter.compute()


def _check_cam(cam: ArrayLike, keys: ArrayLike, where: str) -> tuple[np.ndarray, np.ndarray]:
    cam, keys = _numpy(cam, np.float32), _numpy(keys, np.int64).reshape(-1)
    if cam.ndim != 3 or cam.shape[0] != keys.size:
        raise ValueError(f"{where}: cam must be (k, H, W) with k = len(keys) = {keys.size}, got {cam.shape}")
    # NaN never beats a threshold in cam_to_mask but sorts above every one in the evaluator's
    # sweep: no answer is right, so refuse (a diverged classifier writes such maps).
    if not np.isfinite(cam).all():
        raise ValueError(f"{where}: cam holds {int((~np.isfinite(cam)).sum())} NaN or infinite values")
    return cam, keys


def _top_channel(cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Highest map and its channel per pixel, ``(H, W)`` each; ties go to the first channel."""
    if cam.shape[0] == 0:  # no class present: nothing beats the background plane
        return np.zeros(cam.shape[1:], np.float32), np.zeros(cam.shape[1:], np.int64)
    chan = cam.argmax(0)
    return np.take_along_axis(cam, chan[None], 0)[0], chan


def cam_to_mask(cam: ArrayLike, keys: ArrayLike, threshold: float) -> torch.Tensor:
    """IRN's CAM-to-mask rule: argmax over ``[threshold plane, cam]``, mapped back to class ids.

    Args:
        cam: ``(k, H, W)`` max-normalised maps (values in ``[0, 1]``) of the image's present classes.
        keys: ``(k,)`` their class ids in ``1..K-1``.
        threshold: value of the constant background plane; a pixel is foreground only where its
            highest class map exceeds it (a tie goes to background, as with ``np.argmax``).

    Returns:
        ``(H, W)`` int64 mask of class ids, 0 = background. All-zero maps, or no present class
        (``k = 0``), give all background.

    Raises:
        ValueError: shapes disagree, or ``cam`` holds NaN or infinite values.
    """
    cam, keys = _check_cam(cam, keys, "cam_to_mask")
    top, chan = _top_channel(cam)
    cls = keys[chan] if keys.size else chan
    return torch.from_numpy(np.where(top > np.float32(threshold), cls, 0))


def default_thresholds(step: float = 0.05) -> list[float]:
    """The usual sweep ``step, 2*step, ... < 1`` (0.05..0.95 for the default step), rounded."""
    n = int(np.floor((1 - 1e-9) / step))
    return [round(step * i, 6) for i in range(1, n + 1)]


class CamEvaluator:
    """mIoU of CAMs at every background threshold of a sweep, in one pass over the data.

    A pixel whose highest class map is ``m`` (class ``c``) is predicted ``c`` for every threshold
    below ``m`` and background for the rest. So instead of one confusion matrix per threshold the
    evaluator keeps a histogram over (ground truth, top class, number of thresholds below ``m``),
    one bincount per image, and turns it into the per-threshold matrices by a cumulative sum.

    Args:
        num_classes: ``K``, background included.
        thresholds: background thresholds to sweep; default :func:`default_thresholds` of ``step``.
        step: sweep step when ``thresholds`` is not given (``CamConfig.thresholds_step``).

    Example:
        >>> ev = CamEvaluator(2)
        >>> cam = torch.tensor([[[0.7, 0.3]]])  # (k=1, H=1, W=2)
        >>> ev.update(cam, [1], torch.tensor([[1, 0]]))
        >>> ev.compute()["miou"]
        100.0
    """

    def __init__(
        self, num_classes: int, thresholds: Sequence[float] | None = None, step: float = 0.05
    ) -> None:
        self.num_classes = num_classes
        self.thresholds = [float(t) for t in (default_thresholds(step) if thresholds is None else thresholds)]
        if not self.thresholds or sorted(self.thresholds) != self.thresholds:
            raise ValueError(f"thresholds must be a non-empty increasing sequence, got {self.thresholds}")
        self._t = np.array(self.thresholds, np.float32)  # float32 like the CAM: ties as in cam_to_mask
        self._hist = np.zeros((num_classes, num_classes, len(self.thresholds) + 1), np.int64)

    def update(self, cam: ArrayLike, keys: ArrayLike, gt: ArrayLike) -> None:
        """Add one image.

        Args:
            cam: ``(k, H, W)`` normalised maps of the present classes (as for :func:`cam_to_mask`).
            keys: ``(k,)`` their class ids in ``1..K-1``.
            gt: ``(H, W)`` ground-truth mask, 255 = ignore.
        """
        cam, keys = _check_cam(cam, keys, "CamEvaluator.update")
        gt = _numpy(gt, np.int64)
        n_cls, n_bins = self.num_classes, self._hist.shape[2]
        if gt.shape != cam.shape[1:]:
            raise ValueError(f"gt shape {gt.shape} != cam spatial shape {cam.shape[1:]}")
        if keys.size and (keys.min() < 1 or keys.max() >= n_cls):
            raise ValueError(f"keys must lie in 1..{n_cls - 1}, got {keys.tolist()}")
        valid = gt != IGNORE_INDEX
        if gt.size and (gt.min() < 0 or np.where(valid, gt, 0).max() >= n_cls):
            raise ValueError(f"gt holds labels outside 0..{n_cls - 1} and 255")
        top, chan = _top_channel(cam)
        # Number of thresholds strictly below the top map = those at which the pixel is foreground.
        n_fg = np.searchsorted(self._t, top, side="left")
        k = max(keys.size, 1)
        hist = _histogram((gt * k + chan) * n_bins + n_fg, valid, n_cls * k * n_bins)
        hist = hist.reshape(n_cls, k, n_bins)
        if keys.size:
            np.add.at(self._hist, (slice(None), keys), hist)  # add.at: safe for repeated keys
        else:
            self._hist[:, 0] += hist[:, 0]  # no map: background at every threshold

    def confusions(self) -> torch.Tensor:
        """``(T, K, K)`` int64 confusion matrices, one per threshold."""
        hist = self._hist  # (K_gt, K_top, T + 1)
        # At threshold i a pixel with n_fg > i is predicted as its top class, else as background.
        fg = hist[..., ::-1].cumsum(-1)[..., ::-1][..., 1:]  # (K, K, T): pixels with n_fg > i
        conf = fg.transpose(2, 0, 1).copy()  # (T, K_gt, K_pred)
        conf[:, :, 0] += (hist.sum(-1, keepdims=True) - fg).sum(1).T  # the rest is background
        return torch.from_numpy(conf)

    def compute(self) -> dict:
        """Best-threshold scores.

        Returns:
            dict with ``miou`` (best, percent), ``threshold`` (the best; the lowest among ties),
            ``iou``, ``precision``, ``recall`` at the best threshold (as in
            :func:`iou_from_confusion`) and ``curve``: ``[[threshold, miou], ...]``.
        """
        results = [iou_from_confusion(conf) for conf in self.confusions()]
        curve = [[t, r["miou"]] for t, r in zip(self.thresholds, results, strict=True)]
        scores = np.array([r["miou"] for r in results], dtype=float)
        best = int(np.nanargmax(scores)) if not np.isnan(scores).all() else 0
        return {**results[best], "threshold": self.thresholds[best], "curve": curve}


def classification_metrics(scores: ArrayLike, labels: ArrayLike) -> dict:
    """Multi-label classification scores for the classifier's per-epoch validation.

    Args:
        scores: ``(N, C)`` logits (not probabilities): a class counts as predicted where its
            logit is > 0, i.e. sigmoid > 0.5.
        labels: ``(N, C)`` multi-hot image labels (foreground classes only).

    Returns:
        dict with ``mAP`` (percent; torchmetrics' average precision averaged over the classes
        with at least one positive image, i.e. its macro multilabel AP restricted to them) and
        ``F1`` (percent; torchmetrics' F1 averaged over the classes labelled or predicted at
        least once). NaN when no class qualifies.
    """
    scores = torch.from_numpy(_numpy(scores, np.float32))
    labels = torch.from_numpy(_numpy(labels, np.int64))
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(
            f"scores and labels must both be (N, C), got {tuple(scores.shape)}, {tuple(labels.shape)}"
        )
    # Classes without positives have no defined AP (torchmetrics would warn and score them 0).
    present = (labels.sum(0) > 0).nonzero().flatten().tolist()
    aps = [float(binary_average_precision(scores[:, c], labels[:, c])) for c in present]
    ap = float(np.mean(aps)) if aps else float("nan")
    predicted = (scores > 0).long()  # logit > 0 <=> sigmoid > 0.5
    seen = ((labels.sum(0) > 0) | (predicted.sum(0) > 0)).nonzero().flatten().tolist()
    f1s = [float(binary_f1_score(predicted[:, c], labels[:, c])) for c in seen]
    f1 = float(np.mean(f1s)) if f1s else float("nan")
    return {"mAP": 100 * ap, "F1": 100 * f1}
