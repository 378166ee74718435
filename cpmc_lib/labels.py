"""The pseudo-label rules of one image: background decision, ignore zone, class assignment (IRN's ``cam_to_ir_label``).

Pure functions over one image's saved maps (:mod:`cpmc_lib.mapfile`): ``cam`` (k, H, W) of its
present classes ``keys``. The pseudo-label stage (:mod:`cpmc_lib.pseudo`) applies them to every
image of a split; chapter 7 computes each by hand and checks it against these.

1. **The background plane** ``t`` of an image comes from ``pseudo.threshold_rule``, a rule that
   reads no ground truth (:func:`image_threshold`): ``"fixed"`` - the constant ``pseudo.bg_threshold``
   (chosen once on the tuning seed and frozen, like IRN's conf_fg 0.30 / conf_bg 0.05); ``"otsu"`` -
   per image, Otsu's threshold of the image's own top-class map (:func:`otsu_threshold`: the cut
   that best separates its values into two groups; it adapts where a frozen value would not
   transfer); ``"oracle"`` - the CAM method's best threshold against the ground truth of these very
   images (IRN's *evaluation* protocol; an oracle view, kept only to compare with).
2. **The ignore zone** (IRN's confident regions, method notes §3.3, §3.5): two planes around ``t``,
   ``fg = t * band[1]`` and ``bg = t * band[0]`` (:func:`band_planes`); with a constant plane
   prepended, the arg-max labels a pixel foreground where its top class map exceeds ``fg``,
   background where it does not exceed ``bg``, and ignore (255) in between (:func:`pseudo_label`,
   :func:`combine_confident`).
3. **The dense CRF** (:func:`crf_pseudo_label`): the same rule on the arg-max of the CRF posterior
   of :func:`cam_probs` (the normalised ``[plane, cam]`` scores as unary probabilities; one CRF per
   plane). Deviation from IRN: IRN feeds *hard* labels to the CRF (``unary_from_labels``, gt_prob
   0.7); here the soft scores are used, so the CRF can weigh how sure the CAM is.
4. **Whose body is it** (:func:`assign_to_parts`, ``pseudo.assign="parts"``, this book's addition):
   sibling classes share a body, so in an image holding two of them each one's map fires on both
   bodies and the arg-max hands one class both. Where two or more maps contend, the pixel goes to the
   class whose *part* - the peak of its classifier CAM, which finds the part - lies nearest. It
   reads the classifier CAMs of the same image and no ground truth.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from .config import Config, CrfConfig, PseudoConfig
from .crf import dense_crf
from .io import IGNORE_INDEX
from .metrics import cam_to_mask

__all__ = [
    "PER_IMAGE_RULES",
    "THRESHOLD_RULES",
    "assign_to_parts",
    "band_planes",
    "cam_probs",
    "check_band",
    "combine_confident",
    "crf_pseudo_label",
    "describe_threshold",
    "image_threshold",
    "label_planes",
    "otsu_cut",
    "otsu_threshold",
    "pseudo_label",
    "rule_threshold",
]


THRESHOLD_RULES = ("fixed", "otsu", "oracle")
# Rules that decide per image from its own maps (no single threshold to record).
PER_IMAGE_RULES = ("otsu",)


_RULE_TEXT = {
    "fixed": "a constant frozen in the config (chosen once on the tuning seed)",
    "otsu": "Otsu's cut of each image's own top-class map",
    "oracle": "the CAM's best threshold against the ground truth (an oracle view, never for training)",
}


def describe_threshold(result: dict) -> str:
    """One line saying how a pseudo-label result (:func:`run`) decided the background.

    Example:
        >>> describe_threshold({"threshold_rule": "fixed", "threshold": 0.4})
        'background threshold 0.400, rule fixed: a constant frozen in the config (chosen once on the tuning seed)'
    """
    rule, threshold = result.get("threshold_rule"), result.get("threshold")
    text = _RULE_TEXT.get(rule, str(rule))
    if threshold is not None:
        return f"background threshold {threshold:.3f}, rule {rule}: {text}"
    mean = result.get("threshold_mean")
    tail = f"; mean threshold {mean:.3f} over the {result.get('images', 'labelled')} images" if mean is not None else ""
    return f"background threshold per image, rule {rule}: {text}{tail}"


def otsu_threshold(values: np.ndarray, bins: int = 64) -> float:
    """Otsu's threshold of values in ``[0, 1]``: the cut maximising the between-group variance.

    Args:
        values: any shape, e.g. an image's ``(H, W)`` top-class map.
        bins: histogram bins over ``[0, 1]``.

    Returns:
        The upper edge of the best lower group, in ``(0, 1]``; 1.0 when the values do not split
        (all equal), so that a flat map is all background.

    Example:
        >>> round(otsu_threshold(np.array([0.1, 0.12, 0.11, 0.8, 0.82])), 3)
        0.125
    """
    v = np.clip(np.asarray(values, dtype=np.float64).ravel(), 0, 1)
    hist = np.bincount(np.minimum((v * bins).astype(np.int64), bins - 1), minlength=bins).astype(np.float64)
    return otsu_cut(hist)


def otsu_cut(hist: np.ndarray) -> float:
    """Otsu's threshold of a histogram over ``[0, 1]`` in ``len(hist)`` equal bins (:func:`otsu_threshold`
    of the values it counts; histograms of several images can be summed first). 1.0 when they do not split."""
    hist = np.asarray(hist, dtype=np.float64)
    bins = hist.size
    centres = (np.arange(bins) + 0.5) / bins
    w0 = np.cumsum(hist)[:-1]  # pixels in bins 0..t (cut after bin t)
    w1 = hist.sum() - w0
    s0 = np.cumsum(hist * centres)[:-1]
    m0 = s0 / np.maximum(w0, 1)
    m1 = (hist @ centres - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    if hist.sum() == 0 or not (between > 0).any():
        return 1.0
    return float((int(np.argmax(between)) + 1) / bins)


def image_threshold(cam: np.ndarray, rule: str, value: float = 0.0) -> float:
    """The background plane of one image under a rule that reads no ground truth.

    Args:
        cam: ``(k, H, W)`` max-normalised maps of the image's present classes.
        rule: ``"fixed"`` (``value``) or ``"otsu"`` (:func:`otsu_threshold` of ``max_c cam_c``).
            ``"oracle"`` is resolved once per data set by :func:`rule_threshold`, not here.
        value: the fixed threshold.

    Returns:
        The plane value; 1.0 (all background) for an image without maps (``k = 0``) under "otsu".

    Example:
        >>> cam = np.array([[[0.1, 0.12, 0.11, 0.8, 0.82]]])
        >>> image_threshold(cam, "fixed", 0.3), image_threshold(cam, "otsu")
        (0.3, 0.125)
    """
    if rule == "fixed":
        return float(value)
    if rule == "otsu":
        cam = np.asarray(cam, dtype=np.float32)
        return otsu_threshold(cam.max(0)) if cam.shape[0] else 1.0
    raise ValueError(
        f"image_threshold: rule {rule!r} is not a per-image rule; rules: {', '.join(THRESHOLD_RULES)}"
    )


def rule_threshold(cfg: Config, cam_metrics: dict[str, Any] | None = None) -> float | None:
    """The single threshold of ``cfg.pseudo.threshold_rule``, or None for a per-image rule.

    ``"fixed"``: ``pseudo.bg_threshold``; ``"oracle"``: the CAM method's best threshold against
    the ground truth (``cam_metrics["threshold"]``; comparison only).

    Raises:
        ValueError: an unknown rule, a fixed threshold outside ``(0, 1)``, a band that
            :func:`check_band` refuses, or ``pseudo.assign`` settings out of range.
    """
    p = cfg.pseudo
    check_band(p.band)
    if p.assign not in ("argmax", "parts"):
        raise ValueError(f"pseudo.assign {p.assign!r}; one of: argmax, parts")
    if not (0 < p.part_share <= 1 and p.contest_share >= 0):
        raise ValueError(
            f"pseudo.part_share must lie in (0, 1] and contest_share be >= 0, got {p.part_share}, {p.contest_share}"
        )
    if p.threshold_rule not in THRESHOLD_RULES:
        raise ValueError(f"pseudo.threshold_rule {p.threshold_rule!r}; rules: {', '.join(THRESHOLD_RULES)}")
    if p.threshold_rule == "fixed":
        if not 0 < p.bg_threshold < 1:
            raise ValueError(
                f"pseudo.bg_threshold must lie in (0, 1) with threshold_rule fixed, got {p.bg_threshold}"
                " (the ground-truth-picked threshold is threshold_rule: oracle)"
            )
        return float(p.bg_threshold)
    if p.threshold_rule == "oracle":
        if cam_metrics is None:
            raise ValueError("pseudo.threshold_rule oracle needs the CAM method's metrics")
        return float(cam_metrics["threshold"])
    return None


def check_band(band: tuple[float, float]) -> tuple[float, float]:
    """``pseudo.band`` as (lower, upper) factors after checking ``0 < lower <= 1 <= upper``.

    Raises:
        ValueError: anything else, naming the setting.
    """
    lo, hi = band
    if not 0 < lo <= 1 <= hi:
        raise ValueError(f"pseudo.band must satisfy 0 < band[0] <= 1 <= band[1], got {list(band)}")
    return lo, hi


def band_planes(threshold: float, band: tuple[float, float]) -> tuple[float, float]:
    """The (foreground, background) planes of ``pseudo.band`` around a background plane ``threshold``.

    IRN's confident regions (its ``conf_fg`` / ``conf_bg``, 0.30 / 0.05) relative to the plane of
    any rule, so that they follow a per-image threshold: ``(threshold * band[1], threshold * band[0])``. The
    foreground plane is held below 1, the peak of every max-normalised map, so that each present
    class keeps its most confident pixels.

    Raises:
        ValueError: ``band`` is not two numbers with ``0 < band[0] <= 1 <= band[1]``.

    Example:
        >>> band_planes(0.4, (0.5, 1.5))
        (0.6000000000000001, 0.2)
    """
    lo, hi = check_band(band)
    return max(threshold, min(threshold * hi, 0.9)), threshold * lo


def label_planes(threshold: float, p: PseudoConfig) -> tuple[float, float]:
    """The (foreground, background) planes of one image whose background plane is ``threshold``:
    ``pseudo.band`` around it (:func:`band_planes`)."""
    return band_planes(threshold, p.band)


def pseudo_label(cam: np.ndarray, keys: np.ndarray, fg: float, bg: float | None = None) -> np.ndarray:
    """Pseudo label of one image without CRF: IRN's rule on two planes.

    Args:
        cam: (k, H, W) max-normalised maps of the present classes.
        keys: (k,) their class ids.
        fg: the foreground plane: a pixel is an object where its top map exceeds it.
        bg: the background plane (default ``fg``: no ignore zone): background where the top map
            does not exceed it; ignore (255) in between.

    Returns:
        (H, W) uint8 class ids, 255 = ignore; all background for all-zero maps or ``k = 0``.

    Raises:
        ValueError: ``bg > fg``, or ``cam`` holds NaN or infinite values
            (from :func:`~cpmc_lib.metrics.cam_to_mask`).

    Example:
        >>> cam = np.array([[[0.9, 0.2, 0.01]]])  # one class, three pixels
        >>> pseudo_label(cam, [3], 0.3, 0.05).tolist()
        [[3, 255, 0]]
    """
    bg = fg if bg is None else bg
    if bg > fg:
        raise ValueError(f"pseudo_label: the background plane ({bg}) lies above the foreground plane ({fg})")
    cam = np.asarray(cam, dtype=np.float32)
    hi = cam_to_mask(cam, keys, fg).numpy()
    lo = hi if bg == fg else cam_to_mask(cam, keys, bg).numpy()
    return combine_confident(hi, lo)


def combine_confident(fg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """IRN's combination of the two label maps: fg labels, 0 where both say background, else 255.

    Args:
        fg: (H, W) labels from the high plane (class ids, 0 = background).
        bg: (H, W) labels from the low plane.

    Returns:
        (H, W) uint8: ``fg`` where it is foreground; 0 where ``fg`` and ``bg`` are both
        background; 255 (ignore) where only ``bg`` sees an object.
    """
    fg, bg = np.asarray(fg), np.asarray(bg)
    out = np.where(fg > 0, fg, IGNORE_INDEX)
    out[(fg == 0) & (bg == 0)] = 0
    return out.astype(np.uint8)


def cam_probs(cam: np.ndarray, plane: float) -> np.ndarray:
    """CRF input: ``[plane, cam]`` normalised to sum 1 per pixel (its argmax is IRN's rule).

    Args:
        cam: (k, H, W) normalised maps.
        plane: value of the constant background plane.

    Returns:
        (k+1, H, W) float32 probabilities, channel 0 = background.

    Raises:
        ValueError: ``cam`` holds NaN or infinite values.
    """
    cam = np.asarray(cam, dtype=np.float32)
    if not np.isfinite(cam).all():  # NaN would reach the CRF as NaN probabilities
        raise ValueError(f"cam_probs: cam holds {int((~np.isfinite(cam)).sum())} NaN or infinite values")
    cam = np.clip(cam, 0, None)
    scores = np.concatenate([np.full((1, *cam.shape[1:]), plane, np.float32), cam])
    return scores / np.maximum(scores.sum(0, keepdims=True), 1e-5)


def crf_pseudo_label(
    img: np.ndarray, cam: np.ndarray, keys: np.ndarray, crf: CrfConfig, fg: float, bg: float | None = None
) -> np.ndarray:
    """Pseudo label of one image with the dense CRF (one CRF per plane).

    Args:
        img: (H, W, 3) uint8 image.
        cam, keys, fg, bg: as in :func:`pseudo_label`.

    Returns:
        (H, W) uint8 class ids, 255 = ignore.
    """
    bg = fg if bg is None else bg
    ids = np.concatenate([[0], np.asarray(keys, dtype=np.int64)])
    hi = ids[dense_crf(img, cam_probs(cam, fg), crf).argmax(0)]
    lo = hi if bg == fg else ids[dense_crf(img, cam_probs(cam, bg), crf).argmax(0)]
    return combine_confident(hi, lo)


def assign_to_parts(
    label: np.ndarray,
    cam: np.ndarray,
    keys: np.ndarray,
    part_cam: np.ndarray,
    plane: float,
    part_share: float = 0.7,
    contest_share: float = 0.5,
) -> np.ndarray:
    """Give each contested object pixel to the present class whose discriminative part is nearest.

    Objects of one group share their body, so a prototype map of one class fires on the bodies of
    its siblings in the same image, and the arg-max hands a sibling's body to whichever class's map
    is higher there. What tells the two bodies apart is the part inside each, which the classifier
    CAM finds. An object pixel is *contested* where two or more present classes' maps exceed
    ``contest_share * plane``; it goes to the contender whose *part* - the cells where its
    classifier CAM reaches ``part_share`` of its peak - lies nearest (Euclidean distance). Nothing
    else changes: background, ignore and uncontested pixels keep their label.

    Args:
        label: (H, W) uint8 pseudo label (0 background, class ids, 255 ignore) made from ``cam``.
        cam: (k, H, W) the maps of the present classes the label came from.
        keys: (k,) their class ids.
        part_cam: (k, H, W) the classifier CAMs of the same classes, in the same order.
        plane: the image's background plane (:func:`image_threshold`).
        part_share, contest_share: ``pseudo.part_share`` and ``pseudo.contest_share``.

    Returns:
        (H, W) uint8 label.

    Example:
        >>> cam = np.array([[[0.9, 0.9, 0.9, 0.9]], [[0.8, 0.8, 0.8, 1.0]]])  # both cover all 4 pixels
        >>> part_cam = np.array([[[1.0, 0.2, 0.0, 0.0]], [[0.0, 0.0, 0.2, 1.0]]])
        >>> assign_to_parts(np.array([[1, 1, 1, 2]]), cam, [1, 2], part_cam, 0.4).tolist()
        [[1, 1, 2, 2]]
    """
    label, keys = np.asarray(label), np.asarray(keys, dtype=np.int64)
    if len(keys) < 2:
        return label
    cam, part_cam = np.asarray(cam, np.float32), np.asarray(part_cam, np.float32)
    if part_cam.shape != cam.shape:
        raise ValueError(f"assign_to_parts: classifier CAMs {part_cam.shape} do not match the maps {cam.shape}")
    contender = cam > contest_share * plane
    contested = (contender.sum(0) > 1) & (label > 0) & (label != IGNORE_INDEX)
    if not contested.any():
        return label
    parts = part_cam >= part_share * part_cam.max(axis=(1, 2), keepdims=True)
    parts &= part_cam > 0
    dist = np.stack([ndimage.distance_transform_edt(~m) if m.any() else np.full(m.shape, np.inf) for m in parts])
    dist = np.where(contender, dist, np.inf)
    nearest = dist.argmin(0)
    found = np.isfinite(dist.min(0))
    return np.where(contested & found, keys[nearest], label).astype(label.dtype)
