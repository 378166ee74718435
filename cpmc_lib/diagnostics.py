"""Pathology diagnostics: how much of CPMC's two built-in failures a CAM shows.

The synthetic benchmark (:mod:`cpmc_lib.synth`) writes a diagnostic mask beside every ground-truth
mask that says what each pixel is by design: object body, discriminative part, atypical body,
context of a present or an absent class, distractor, neutral background. mIoU mixes the two
failures CPMC calibrates; these measures separate them:

- **false negatives** (incomplete activation): how much of the *body* a CAM covers compared with
  the *part* (``recall_body`` vs ``recall_part``, ``act_body`` vs ``act_part``);
- **false positives** (background noise): how strongly it fires on *context* and *distractors*
  compared with neutral background (``act_context`` vs ``act_neutral``, ``fp_context``, ...).

:func:`fn_fp_fractions` compares two CAMs' masks directly: what one misses or adds relative to
the other, the "failure modes of prototype CAMs" the dataset card records.
"""

from __future__ import annotations

import numpy as np
import torch

from . import distributed
from .io import IGNORE_INDEX
from .metrics import cam_to_mask
from .synth import ATYPICAL, BODY, CONTEXT_ABSENT, CONTEXT_PRESENT, DISTRACTOR, NEUTRAL, PART

__all__ = [
    "BACKGROUND_CODES", "FpSplitMeter", "LabelPathologyMeter", "OBJECT_CODES", "ORACLE_FIXES", "PathologyMeter",
    "fn_fp_fractions", "oracle_fixed_label",
]  # fmt: skip

# Diagnostic code -> the name used in the result keys.
OBJECT_CODES = {BODY: "body", PART: "part", ATYPICAL: "atypical"}
BACKGROUND_CODES = {
    NEUTRAL: "neutral",
    CONTEXT_PRESENT: "context",
    CONTEXT_ABSENT: "absent_context",
    DISTRACTOR: "distractor",
}


ArrayLike = torch.Tensor | np.ndarray


def _numpy(x: ArrayLike, dtype: type) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(dtype, copy=False)


def _own_activation(cam: np.ndarray, keys: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Activation of each pixel's ground-truth class map: ``(H, W)``, 0 where that class has no map."""
    lut = np.zeros(256, np.int64)  # class id -> 1 + channel of its map (0 = none)
    lut[keys] = np.arange(1, keys.size + 1)
    padded = np.concatenate([np.zeros((1, *cam.shape[1:]), cam.dtype), cam])
    return np.take_along_axis(padded, lut[np.clip(gt, 0, 255)][None], 0)[0]


class PathologyMeter:
    """Per-code activations, recalls and false-positive rates of CAMs, summed over a dataset.

    Args:
        threshold: background threshold turning a CAM into a mask (:func:`cam_to_mask`),
            usually the best one of :class:`~cpmc_lib.metrics.CamEvaluator`.

    Example:
        >>> meter = PathologyMeter(0.5)
        >>> cam = torch.tensor([[[0.3, 0.9, 0.6]]])  # (k=1, H=1, W=3): body, part, context pixels
        >>> meter.update(cam, [1], torch.tensor([[1, 1, 0]]), torch.tensor([[1, 2, 3]]))
        >>> meter.compute()["recall_body"], meter.compute()["fp_context"]
        (0.0, 100.0)
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        # Per diagnostic code (0..255): pixel count, summed own-class and highest activation,
        # pixels predicted as their gt class, pixels predicted as some foreground class.
        self._sums = {name: np.zeros(256) for name in ("n", "own", "top", "right", "fg")}

    def update(
        self, cam: ArrayLike, keys: ArrayLike, gt: ArrayLike, diag: ArrayLike, threshold: float | None = None
    ) -> None:
        """Add one image.

        Args:
            cam: ``(k, H, W)`` normalised maps in ``[0, 1]`` of the image's present classes.
            keys: ``(k,)`` their class ids in ``1..K-1``.
            gt: ``(H, W)`` ground-truth mask (255 = ignore).
            diag: ``(H, W)`` diagnostic codes of :mod:`cpmc_lib.synth` (255 border, skipped).
            threshold: this image's threshold (a per-image rule); None = the meter's.
        """
        cam, keys = _numpy(cam, np.float32), _numpy(keys, np.int64).reshape(-1)
        gt, diag = _numpy(gt, np.int64), _numpy(diag, np.int64)
        if not (gt.shape == diag.shape == cam.shape[1:]):
            raise ValueError(f"shapes differ: cam {cam.shape}, gt {gt.shape}, diag {diag.shape}")
        pred = cam_to_mask(cam, keys, self.threshold if threshold is None else threshold).numpy()
        top = cam.max(0) if cam.shape[0] else np.zeros(gt.shape, np.float32)
        _add_codes(self._sums, diag, own=_own_activation(cam, keys, gt), top=top, **_hits(pred, gt))

    def compute(self) -> dict:
        """Pixel-weighted means over everything seen so far.

        Returns:
            dict with, for object codes (``body``, ``part``, ``atypical``): ``recall_<name>``
            (percent of pixels predicted as their class) and ``act_<name>`` (mean activation of
            the object's own class map); for background codes (``context``, ``neutral``,
            ``absent_context``, ``distractor``): ``act_<name>`` (mean of the highest class map)
            and ``fp_<name>`` (percent of pixels predicted as some foreground class); and
            ``n_<name>``, the pixel count of every code. A code with no pixels gives NaN.
        """
        return _rates(self._sums)


class LabelPathologyMeter:
    """:class:`PathologyMeter`'s recalls and false-positive rates for label maps, summed over a dataset.

    For what has no activations: pseudo labels and a segmentation network's predictions. Where the
    weakly supervised network falls short of the fully supervised one, these say which kind of
    pixel it gets wrong (missed body, context labelled object, ...).

    Example:
        >>> meter = LabelPathologyMeter()
        >>> pred = np.array([[0, 2, 2, 255]])  # body missed, part right, context labelled 2, ignored
        >>> meter.update(pred, np.array([[2, 2, 0, 0]]), np.array([[1, 2, 3, 3]]))
        >>> {k: meter.compute()[k] for k in ("recall_body", "recall_part", "fp_context")}
        {'recall_body': 0.0, 'recall_part': 100.0, 'fp_context': 50.0}
    """

    def __init__(self) -> None:
        self._sums = {name: np.zeros(256) for name in ("n", "right", "fg")}
        # The same per (ground-truth class, code) of object pixels: index class * 256 + code.
        self._class_sums = {name: np.zeros(256 * 256) for name in ("n", "right", "ignored")}

    def update(self, pred: ArrayLike, gt: ArrayLike, diag: ArrayLike) -> None:
        """Add one image (or a stack): ``pred``, ``gt`` and ``diag`` of one shape, class ids, 255 = ignore.

        A pixel the labels ignore (255) counts as neither right nor foreground.
        """
        pred, gt, diag = (_numpy(x, np.int64) for x in (pred, gt, diag))
        if not (pred.shape == gt.shape == diag.shape):
            raise ValueError(f"shapes differ: pred {pred.shape}, gt {gt.shape}, diag {diag.shape}")
        hits = _hits(pred, gt)
        _add_codes(self._sums, diag, **hits)
        obj = (gt > 0) & (gt < IGNORE_INDEX) & (diag < 255)
        index = gt[obj] * 256 + diag[obj]
        for name, weights in (("n", None), ("right", hits["right"][obj]), ("ignored", pred[obj] == IGNORE_INDEX)):
            w = None if weights is None else weights.astype(np.float64)
            self._class_sums[name] += np.bincount(index, weights=w, minlength=256 * 256)

    @property
    def pixels(self) -> int:
        """Pixels counted so far (border pixels, code 255, left out)."""
        return int(self._sums["n"][:255].sum())

    def all_reduce(self) -> None:
        """Sum the counts over torchrun's ranks (nothing to do in one process)."""
        for attr in ("_sums", "_class_sums"):
            sums = getattr(self, attr)
            names = sorted(sums)
            total = distributed.all_reduce_tensor(torch.from_numpy(np.stack([sums[k] for k in names])))
            setattr(self, attr, dict(zip(names, total.numpy(), strict=True)))

    def compute(self) -> dict:
        """``recall_<object code>``, ``fp_<background code>`` (percent) and ``n_<code>``, as in
        :meth:`PathologyMeter.compute` without the activations; NaN for a code with no pixels."""
        return _rates(self._sums)

    def compute_by_class(self) -> dict[str, dict[str, float]]:
        """The object recalls per ground-truth class: where the labels' misses concentrate.

        Returns:
            ``{class id (str, a JSON key): {"recall_<name>": percent of the class's <name> pixels
            labelled with the class, "ignored_<name>": percent labelled 255, "n_<name>": count}}``
            for ``body``, ``part``, ``atypical``; only classes seen, and the percentages only for
            codes with pixels (no NaN: a stage's result must compare equal after a JSON round trip).

        Example:
            >>> meter = LabelPathologyMeter()
            >>> meter.update(np.array([[0, 2, 3, 255]]), np.array([[2, 2, 3, 3]]), np.array([[1, 2, 1, 1]]))
            >>> meter.compute_by_class()["3"]["recall_body"], meter.compute_by_class()["3"]["ignored_body"]
            (50.0, 50.0)
        """
        n = self._class_sums["n"].reshape(256, 256)
        right, ignored = (self._class_sums[k].reshape(256, 256) for k in ("right", "ignored"))
        out = {}
        for c in np.flatnonzero(n.sum(1)):
            row: dict[str, float] = {}
            for code, name in OBJECT_CODES.items():
                total = int(n[c, code])
                if total:
                    row[f"recall_{name}"] = 100 * float(right[c, code]) / total
                    row[f"ignored_{name}"] = 100 * float(ignored[c, code]) / total
                row[f"n_{name}"] = total
            out[str(int(c))] = row
        return out


def _hits(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """Per pixel: predicted as its ground-truth class; predicted as some foreground class."""
    return {"right": pred == gt, "fg": (pred > 0) & (pred != IGNORE_INDEX)}


def _add_codes(sums: dict[str, np.ndarray], diag: np.ndarray, **per_pixel: np.ndarray) -> None:
    """Sum each per-pixel quantity, and the pixel count ``n``, per diagnostic code (255 = border)."""
    if diag.size and (diag.min() < 0 or diag.max() > 255):
        raise ValueError(f"diagnostic codes must lie in 0..255, got {np.unique(diag)[:10].tolist()}")
    codes = diag.ravel()
    sums["n"] += np.bincount(codes, minlength=256)
    for name, weights in per_pixel.items():
        sums[name] += np.bincount(codes, weights=weights.ravel().astype(np.float64), minlength=256)


def _rates(s: dict[str, np.ndarray]) -> dict:
    """Percent right per object code, percent foreground per background code, mean activations
    where ``s`` sums them (``own``, ``top``), and the pixel count of every code."""
    out = {}
    for codes, rate, act, hit in (
        (OBJECT_CODES, "recall", "own", "right"),
        (BACKGROUND_CODES, "fp", "top", "fg"),
    ):
        for code, name in codes.items():
            n = int(s["n"][code])
            out[f"{rate}_{name}"] = 100 * float(s[hit][code]) / n if n else float("nan")
            if act in s:
                out[f"act_{name}"] = float(s[act][code]) / n if n else float("nan")
            out[f"n_{name}"] = n
    return out


def fn_fp_fractions(pred_a: ArrayLike, pred_b: ArrayLike, gt: ArrayLike) -> dict:
    """What mask B misses and adds relative to mask A (e.g. A = classifier CAM, B = prototype CAM).

    Args:
        pred_a: predicted mask of the reference map, class ids, any shape (a stack of images works).
        pred_b: predicted mask of the compared map, same shape.
        gt: ground-truth mask, same shape, 255 = ignore.

    Returns:
        dict with ``fn``: percent of ground-truth object pixels that A labels with the right class
        and B does not (false negatives of B relative to A); ``fp``: percent of ground-truth
        background pixels that B labels foreground and A labels background (false positives of B
        relative to A); and the counts ``n_fn``, ``n_fp``, ``n_object``, ``n_background`` to sum
        over a dataset. NaN where a denominator is zero.
    """
    pred_a, pred_b, gt = (_numpy(x, np.int64) for x in (pred_a, pred_b, gt))
    if not (pred_a.shape == pred_b.shape == gt.shape):
        raise ValueError(f"shapes differ: {pred_a.shape}, {pred_b.shape}, {gt.shape}")
    obj = (gt != 0) & (gt != IGNORE_INDEX)
    bg = gt == 0
    n_fn = int((obj & (pred_a == gt) & (pred_b != gt)).sum())
    n_fp = int((bg & (pred_a == 0) & (pred_b > 0)).sum())
    n_obj, n_bg = int(obj.sum()), int(bg.sum())
    return {
        "fn": 100 * n_fn / n_obj if n_obj else float("nan"),
        "fp": 100 * n_fp / n_bg if n_bg else float("nan"),
        "n_fn": n_fn,
        "n_fp": n_fp,
        "n_object": n_obj,
        "n_background": n_bg,
    }


class FpSplitMeter:
    """False positives split by what a discrepancy between two maps can see, and what a third keeps.

    CPMC's false-positive side builds local prototypes where the paired maps *disagree* (one labels
    a background pixel object, the other does not). A background pixel both maps label object is
    *shared*: no discrepancy points at it. This meter counts, per background kind of
    :data:`BACKGROUND_CODES` (``context`` is a present class's, as in :class:`PathologyMeter`'s
    ``fp_context``), how many background pixels fall in each group, and which share of each the two
    maps and the calibrated map label object, at the decisions given (the pipeline's
    ground-truth-free ones).

    Example:
        >>> meter = FpSplitMeter()
        >>> gt, diag = np.zeros((1, 4), int), np.full((1, 4), CONTEXT_PRESENT)
        >>> a, b = np.array([[1, 0, 1, 0]]), np.array([[1, 1, 0, 0]])  # shared, two disagree, clean
        >>> meter.update(a, b, np.array([[1, 0, 0, 1]]), gt, diag)  # keeps the shared one, adds one
        >>> r = meter.compute()["context"]
        >>> r["disagree"], r["shared"], r["c_in_disagree"], r["c_in_shared"], r["c_added"]
        (50.0, 25.0, 0.0, 100.0, 25.0)
    """

    KINDS = {name: (code,) for code, name in BACKGROUND_CODES.items()}  # as PathologyMeter's fp_<kind>
    _COUNTS = ("n", "disagree", "shared", "a_fp", "b_fp", "c_fp", "c_in_disagree", "c_in_shared", "c_added")

    def __init__(self) -> None:
        self._sums = {kind: dict.fromkeys(self._COUNTS, 0) for kind in self.KINDS}

    def update(self, a: ArrayLike, b: ArrayLike, c: ArrayLike, gt: ArrayLike, diag: ArrayLike) -> None:
        """Add one image (or a stack): the paired maps' masks ``a`` and ``b``, the calibrated mask ``c``
        (class ids, 0 background, 255 ignored: counts as not object), ``gt`` and ``diag`` of one shape."""
        a, b, c, gt, diag = (_numpy(x, np.int64) for x in (a, b, c, gt, diag))
        if not (a.shape == b.shape == c.shape == gt.shape == diag.shape):
            raise ValueError(f"shapes differ: {a.shape}, {b.shape}, {c.shape}, {gt.shape}, {diag.shape}")
        fa, fb, fc = ((m > 0) & (m != IGNORE_INDEX) for m in (a, b, c))
        for kind, codes in self.KINDS.items():
            at = (gt == 0) & np.isin(diag, codes)
            disagree, shared = at & (fa ^ fb), at & fa & fb
            counts = {
                "n": at, "disagree": disagree, "shared": shared, "a_fp": at & fa, "b_fp": at & fb, "c_fp": at & fc,
                "c_in_disagree": disagree & fc, "c_in_shared": shared & fc, "c_added": at & fc & ~fa & ~fb,
            }  # fmt: skip
            for name, mask in counts.items():
                self._sums[kind][name] += int(mask.sum())

    def compute(self) -> dict[str, dict[str, float]]:
        """Per kind, in percent: ``disagree`` / ``shared`` (of the kind's pixels), ``a_fp``, ``b_fp``,
        ``c_fp`` (the share each map labels object), ``c_in_disagree`` / ``c_in_shared`` (of each
        group, what ``c`` still labels object), ``c_added`` (of the kind's pixels: object in ``c``
        alone); and the counts ``n``, ``n_disagree``, ``n_shared``. NaN where a count is zero."""
        out = {}
        for kind, s in self._sums.items():
            pct = lambda x, n: 100 * x / n if n else float("nan")  # noqa: E731
            out[kind] = {
                **{k: pct(s[k], s["n"]) for k in ("disagree", "shared", "a_fp", "b_fp", "c_fp", "c_added")},
                "c_in_disagree": pct(s["c_in_disagree"], s["disagree"]),
                "c_in_shared": pct(s["c_in_shared"], s["shared"]),
                "n": s["n"], "n_disagree": s["disagree"], "n_shared": s["shared"],
            }  # fmt: skip
        return out


# The kinds of label error the oracle diagnostic sets to the ground truth, and what they are.
ORACLE_FIXES = {
    "class": "object body given to another present class",
    "missed": "object body labelled background or ignored",
    "background": "background (context, distractor, neutral) labelled object",
    "context": "context background (of a present or an absent class) labelled object",
    "distractor": "distractor (a body without its part) labelled object",
}
_FP_REGIONS = {"context": (CONTEXT_PRESENT, CONTEXT_ABSENT), "distractor": (DISTRACTOR,)}


def oracle_fixed_label(
    label: np.ndarray, gt: np.ndarray, diag: np.ndarray, kind: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ORACLE DIAGNOSTIC, never a method: one pseudo label with one kind of error set to the ground truth.

    ``class`` and ``missed`` fix body and atypical-body pixels (false negatives), ``background``
    fixes background pixels labelled object (false positives; ignored background stays ignored),
    ``context`` and ``distractor`` only the background pixels of that diagnostic kind. A network
    trained on such labels says how much of the weak / full gap that kind of error costs
    (``benchmarks/weak_full_gap.py --oracle-fix``).

    Args:
        label: (H, W) pseudo label (0 background, class ids, 255 ignore).
        gt: (H, W) ground-truth mask; diag: (H, W) diagnostic codes of the synthetic benchmark.
        kind: a key of :data:`ORACLE_FIXES`.

    Returns:
        ``(fixed label, fixed pixels, pixels of that kind)``, the last two (H, W) bool.

    Example:
        >>> label, gt = np.array([[2, 0, 1]]), np.array([[1, 1, 2]])  # three body pixels
        >>> fixed, _, _ = oracle_fixed_label(label, gt, np.full((1, 3), BODY), "class")
        >>> fixed.tolist()  # the wrong classes are fixed, the missed pixel is not a class error
        [[1, 0, 2]]
    """
    if kind not in ORACLE_FIXES:
        raise ValueError(f"unknown oracle fix {kind!r}; kinds: {', '.join(ORACLE_FIXES)}")
    labelled = (label > 0) & (label != IGNORE_INDEX)
    if kind == "background":
        region = gt == 0
    elif kind in _FP_REGIONS:
        region = (gt == 0) & np.isin(diag, _FP_REGIONS[kind])
    else:
        region = (diag == BODY) | (diag == ATYPICAL)
    if kind == "class":
        fix = region & labelled & (label != gt)
    elif kind == "missed":
        fix = region & ~labelled
    else:
        fix = region & labelled
    return np.where(fix, gt, label).astype(np.uint8), fix, region
