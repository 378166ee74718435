"""Stage "pseudo": pixel pseudo labels from any CAM method's saved maps (IRN's ``cam_to_ir_label``).

For each image of the segmentation split (``cfg.seg_split()``: by default the cam split; VOC:
train_aug, as IRN, SIPE and SFC make their labels), the saved maps ``cam`` (k, H, W) of its
present classes ``keys`` become a label map by IRN's rule (method notes §3.3, §3.5): a constant
background plane is prepended and the argmax taken,

- foreground where the top class map exceeds ``fg``,
- background where it does not exceed ``bg``,
- ignore (255) in between, a zone that exists only when ``bg < fg``.

The planes (:func:`label_planes`) are ``pseudo.band`` around the image's background plane ``t``
(``fg = t * band[1]``, ``bg = t * band[0]``), or IRN's absolute ``conf_fg`` / ``conf_bg`` when set.

The background plane comes from ``pseudo.threshold_rule``, a rule that reads no ground truth
(:func:`image_threshold`): ``"fixed"`` - the constant ``pseudo.bg_threshold`` (chosen once on the
tuning seed and frozen in the config, like IRN's conf_fg 0.30 / conf_bg 0.05); ``"otsu"`` - per
image, Otsu's threshold of the image's own top-class map (:func:`otsu_threshold`: the cut that
best separates its values into two groups; it adapts where a frozen value would not transfer);
``"oracle"`` - the CAM method's best threshold against the ground truth of these very images
(IRN's *evaluation* protocol; an oracle view, kept only to compare with).

Which present class an object pixel gets: the arg-max, and then (after the CRF, when there is one)
with ``pseudo.assign="parts"``, the default, :func:`assign_to_parts`. Sibling classes share a body,
so in an image holding two of them each one's map fires on both bodies and the arg-max hands one
class both. Where two or more maps contend, the pixel goes to the class whose *part* - the peak of
its classifier CAM, which finds the part - lies nearest. It reads the classifier CAMs of the same
images and no ground truth.

With the dense CRF the same rule is applied to the argmax of the CRF posterior of
:func:`cam_probs` (the normalised ``[plane, cam]`` scores as unary probabilities; one CRF per
plane). Deviation from IRN: IRN feeds *hard* labels to the CRF (``unary_from_labels``, gt_prob
0.7); here the soft scores are used, so the CRF can weigh how sure the CAM is.

Scores: :func:`cpmc_lib.metrics` mIoU over the *labelled* pixels (ignore pixels are left out,
``ignore_frac`` says how many), without and with the CRF, on the images of the cam split that have
a mask (WSSS convention: IRN scores its train_aug labels on train), so they compare with the CAM
scores; ``scored_on`` and ``scored_images`` say so. The other images are labelled, not scored.

Outputs in ``runs/<run>/pseudo/``: ``labels/<name>.png`` (VOC palette PNGs, 255 = ignore; the CRF
labels when ``pseudo.crf``) and the manifest whose result is :func:`run`'s dict.

Example:
    >>> result = run(cfg, method="cam")  # doctest: +SKIP
    >>> result["miou"], result["miou_crf"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from . import distributed
from .config import Config, CrfConfig, PseudoConfig
from .crf import crf_map, dense_crf
from .datasets import build_dataset
from .diagnostics import LabelPathologyMeter, PathologyMeter
from .io import IGNORE_INDEX, read_mask_png, save_mask_png
from .metrics import ConfusionMeter, cam_to_mask, json_iou
from .runtime import pick_device
from .store import RunStore, StageMissingError, missing_stage_message, stage_hash

if TYPE_CHECKING:  # not at run time: CRF worker processes import this module
    from .negatives import NegativeBank

__all__ = [
    "THRESHOLD_RULES",
    "assign_to_parts",
    "cam_probs",
    "band_planes",
    "check_band",
    "combine_confident",
    "compare",
    "compare_zones",
    "describe_threshold",
    "examples",
    "image_threshold",
    "make_labels",
    "otsu_threshold",
    "part_folder",
    "rule_scores",
    "rule_threshold",
    "crf_pseudo_label",
    "label_planes",
    "labels_dir",
    "pseudo_label",
    "run",
    "score_planes",
    "stage_crf_labels",
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
    centres = (np.arange(bins) + 0.5) / bins
    w0 = np.cumsum(hist)[:-1]  # pixels in bins 0..t (cut after bin t)
    w1 = v.size - w0
    s0 = np.cumsum(hist * centres)[:-1]
    m0 = s0 / np.maximum(w0, 1)
    m1 = (hist @ centres - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    if v.size == 0 or not (between > 0).any():
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
            :func:`check_band` refuses, a per-image rule combined with ``pseudo.conf_fg`` /
            ``conf_bg`` (their planes are fixed values), or ``pseudo.assign`` settings out of range.
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
    if p.conf_fg or p.conf_bg:
        raise ValueError(
            f"pseudo.threshold_rule {p.threshold_rule!r} decides per image; set pseudo.conf_fg and"
            " pseudo.conf_bg to 0, or use threshold_rule: fixed for IRN's confident planes"
        )
    return None


def score_planes(bg_threshold: float, conf_fg: float = 0.0, conf_bg: float = 0.0) -> tuple[float, float]:
    """The (foreground, background) plane values: ``conf_fg`` / ``conf_bg``, each 0 = ``bg_threshold``.

    Raises:
        ValueError: if the background plane lies above the foreground plane.
    """
    fg, bg = conf_fg or bg_threshold, conf_bg or bg_threshold
    if bg > fg:
        raise ValueError(f"pseudo.conf_bg ({bg}) must not exceed pseudo.conf_fg ({fg})")
    return fg, bg


def band_planes(threshold: float, band: tuple[float, float]) -> tuple[float, float]:
    """The (foreground, background) planes of ``pseudo.band`` around a background plane ``threshold``.

    IRN's confident regions (``conf_fg`` / ``conf_bg``) relative to the plane of any rule, so that
    they follow a per-image threshold: ``(threshold * band[1], threshold * band[0])``. The
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


def check_band(band: tuple[float, float]) -> tuple[float, float]:
    """``pseudo.band`` as (lower, upper) factors after checking ``0 < lower <= 1 <= upper``.

    Raises:
        ValueError: anything else, naming the setting.
    """
    lo, hi = band
    if not 0 < lo <= 1 <= hi:
        raise ValueError(f"pseudo.band must satisfy 0 < band[0] <= 1 <= band[1], got {list(band)}")
    return lo, hi


def label_planes(threshold: float, p: PseudoConfig) -> tuple[float, float]:
    """The (foreground, background) planes of one image whose background plane is ``threshold``.

    IRN's absolute planes ``pseudo.conf_fg`` / ``conf_bg`` when either is set (:func:`score_planes`),
    otherwise ``pseudo.band`` around the threshold (:func:`band_planes`).
    """
    if p.conf_fg or p.conf_bg:
        return score_planes(threshold, p.conf_fg, p.conf_bg)
    return band_planes(threshold, p.band)


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


def pseudo_label(
    cam: np.ndarray, keys: np.ndarray, bg_threshold: float, conf_fg: float = 0.0, conf_bg: float = 0.0
) -> np.ndarray:
    """Pseudo label of one image without CRF.

    Args:
        cam: (k, H, W) max-normalised maps of the present classes.
        keys: (k,) their class ids.
        bg_threshold, conf_fg, conf_bg: as in :func:`score_planes`.

    Returns:
        (H, W) uint8 class ids, 255 = ignore; all background for all-zero maps or ``k = 0``.

    Raises:
        ValueError: ``cam`` holds NaN or infinite values (from :func:`~cpmc_lib.metrics.cam_to_mask`).

    Example:
        >>> cam = np.array([[[0.9, 0.2, 0.01]]])  # one class, three pixels
        >>> pseudo_label(cam, [3], 0.15, conf_fg=0.3, conf_bg=0.05).tolist()
        [[3, 255, 0]]
    """
    fg, bg = score_planes(bg_threshold, conf_fg, conf_bg)
    cam = np.asarray(cam, dtype=np.float32)
    hi = cam_to_mask(cam, keys, fg).numpy()
    lo = hi if bg == fg else cam_to_mask(cam, keys, bg).numpy()
    return combine_confident(hi, lo)


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
    img: np.ndarray,
    cam: np.ndarray,
    keys: np.ndarray,
    crf: CrfConfig,
    bg_threshold: float,
    conf_fg: float = 0.0,
    conf_bg: float = 0.0,
) -> np.ndarray:
    """Pseudo label of one image with the dense CRF (one CRF per plane).

    Args:
        img: (H, W, 3) uint8 image.
        cam, keys, bg_threshold, conf_fg, conf_bg: as in :func:`pseudo_label`.

    Returns:
        (H, W) uint8 class ids, 255 = ignore.
    """
    fg, bg = score_planes(bg_threshold, conf_fg, conf_bg)
    ids = np.concatenate([[0], np.asarray(keys, dtype=np.int64)])
    hi = ids[dense_crf(img, cam_probs(cam, fg), crf).argmax(0)]
    lo = hi if bg == fg else ids[dense_crf(img, cam_probs(cam, bg), crf).argmax(0)]
    return combine_confident(hi, lo)


def labels_dir(store: RunStore) -> Path:
    """Folder of the pseudo label PNGs of a run."""
    return store.path("pseudo") / "labels"


def _cam_folder(cfg: Config, store: RunStore, method: str) -> tuple[Path, dict[str, Any]]:
    """The method's CAM folder and metrics, made for ``cfg`` by the cams stage.

    ``method="affinity"``: the walked maps of the affinity stage (:mod:`cpmc_lib.affinity`).

    Raises:
        StageMissingError: the maps are missing or were made with other settings.
    """
    from . import cams  # here, not at the top: CRF worker processes import this module

    if method == "affinity":
        folder = store.require("affinity", cfg, "walked maps (affinity stage)") / "maps"
        return folder, {**store.result("affinity"), "method_hash": stage_hash(cfg, "affinity")}

    folder = store.path("cams") / method
    metrics = cams.cached_metrics(cfg, store, method)
    if metrics is None:
        raise StageMissingError(missing_stage_message(cfg, folder, f"{method!r} maps", "cams", method=method))
    return folder, metrics


def part_folder(cfg: Config, store: RunStore) -> Path | None:
    """The classifier CAMs that ``pseudo.assign="parts"`` reads (:func:`assign_to_parts`); None
    under ``"argmax"``.

    Raises:
        StageMissingError: the classifier CAMs of the seg split are missing.
    """
    if cfg.pseudo.assign != "parts":
        return None
    from . import cams  # here, not at the top: CRF worker processes import this module

    folder, _ = _cam_folder(cfg, store, "cam")
    if not cams.seg_maps_done(cfg, store, "cam"):
        raise StageMissingError(
            missing_stage_message(cfg, folder, f"classifier CAMs of the seg split {cfg.seg_split()!r}", "pseudo")
        )
    return folder


def run(
    cfg: Config, store: RunStore | None = None, method: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Stage "pseudo": pseudo labels of every seg-split image from ``method``'s saved maps.

    The maps of seg-split images outside the cam split come from
    :func:`cpmc_lib.cams.map_seg_split` (:func:`cpmc_lib.pipeline.ensure` runs it).

    Args:
        method: CAM method (default ``cfg.pseudo.method``); it becomes part of the config, so
            the stage hash tells labels of different methods apart.

    Returns:
        dict with ``method``, ``threshold`` (the background plane), ``planes`` (fg, bg),
        ``miou``, ``precision``, ``recall``, ``ignore_frac`` (fraction of pixels labelled 255)
        without CRF, the same keys with ``_crf`` after it, ``crf`` (which ones were saved),
        ``split``, ``images`` (labels made), ``scored_on``, ``scored_images`` (see
        :func:`make_labels`), ``seconds`` and ``labels`` (the PNG folder).
    """
    if method is not None and method != cfg.pseudo.method:
        cfg = cfg.replace(**{"pseudo.method": method})
    store = store or RunStore.for_config(cfg)
    with store.stage("pseudo", cfg, device=str(pick_device(cfg.device))) as st:
        if not st.done:
            st.result = _make_labels(cfg, store, st.path / "labels", progress)
    return st.result


def _make_labels(cfg: Config, store: RunStore, out: Path, progress: bool) -> dict[str, Any]:
    from . import cams  # here, not at the top: CRF worker processes import this module

    start = time.perf_counter()
    folder, cam_metrics = _cam_folder(cfg, store, cfg.pseudo.method)
    if not cams.seg_maps_done(cfg, store, cfg.pseudo.method):
        raise StageMissingError(
            missing_stage_message(cfg, folder, f"maps of the seg split {cfg.seg_split()!r}", "pseudo")
        )
    if cfg.affinity.enabled:  # the same maps after the random walk (cpmc_lib.affinity)
        folder, cam_metrics = _cam_folder(cfg, store, "affinity")
    threshold = rule_threshold(cfg, cam_metrics)
    bank = None
    if cfg.pseudo.negatives:
        from .negatives import build_bank  # here, not at the top: CRF worker processes import this module

        bank = build_bank(cfg, store, progress)
    result = make_labels(
        cfg, folder, threshold, out=out, progress=progress, split=cfg.seg_split(),
        part_folder=part_folder(cfg, store), negatives=bank,
    )  # fmt: skip
    # method: whose maps; affinity: whether they went through the random walk first
    result.update(method=cfg.pseudo.method, affinity=cfg.affinity.enabled)
    result.update(seconds=round(time.perf_counter() - start, 1), labels=str(out))
    return result


def _part_assigner(
    part_folder: Path | None, name: str, cam: np.ndarray, keys: np.ndarray, plane: float, p: PseudoConfig
) -> Callable[[np.ndarray], np.ndarray]:
    """label -> label for one image: :func:`assign_to_parts` with its classifier CAMs read from
    ``part_folder``, or the identity when ``part_folder`` is None or the image has under two classes."""
    if part_folder is None or len(keys) < 2:
        return lambda label: label
    saved = np.load(part_folder / f"{name}.npy", allow_pickle=True).item()
    if not np.array_equal(np.asarray(saved["keys"]), np.asarray(keys)):
        raise ValueError(
            f"{part_folder / name}.npy: classes {list(saved['keys'])}, the maps' {list(keys)}; recompute the CAMs"
        )
    part = saved["cam"].astype(np.float32)
    return lambda label: assign_to_parts(label, cam, keys, part, plane, p.part_share, p.contest_share)


def make_labels(
    cfg: Config,
    folder: Path,
    threshold: float | None,
    out: Path | None = None,
    limit: int = 0,
    progress: bool = True,
    split: str | None = None,
    crf_labels: Path | None = None,
    part_folder: Path | None = None,
    negatives: NegativeBank | None = None,
) -> dict[str, Any]:
    """Pseudo labels of a split from the maps in ``folder``, scored without and with CRF.

    Args:
        folder: a CAM method's folder of ``<name>.npy`` maps.
        threshold: background plane (``pseudo.conf_fg`` / ``conf_bg`` set the ignore zone); None:
            per image by ``pseudo.threshold_rule`` (:func:`image_threshold`).
        out: where to save the label PNGs (the CRF labels when ``pseudo.crf``); None saves nothing.
        limit: score only the first ``limit`` images (0 = all), e.g. to compare methods quickly.
        split: the images to label (None: the cam split); ``folder`` must hold their maps.
        crf_labels: a folder of these very labels after the CRF (``<name>.png``: the pseudo stage's
            PNGs, made from the same maps with the same settings); read instead of running the CRF again.
        part_folder: the classifier CAMs (``<name>.npy``) of the same images: contested object pixels
            of both labels go to the class whose part is nearest (:func:`assign_to_parts`, with
            ``pseudo.part_share`` / ``contest_share``); None keeps the maps' arg-max.
        negatives: the run's negative prototypes and masks (:func:`cpmc_lib.negatives.build_bank`):
            both labels are ignored where a class looks like its negatives; None leaves them.

    Returns:
        dict with ``miou``, ``precision``, ``recall``, ``ignore_frac``, ``iou`` (per class),
        ``pathology`` and ``pathology_by_class`` (with diagnostic masks:
        :class:`~cpmc_lib.diagnostics.LabelPathologyMeter`) and the same with ``_crf``,
        plus ``method``, ``threshold`` (None for a per-image rule), ``threshold_rule``,
        ``threshold_mean`` (mean plane over the images), ``planes`` (None per image), ``crf``,
        ``split``, ``images`` (labelled), ``scored_on`` (the cam split: only its images with a
        mask are scored) and ``scored_images``.
    """
    p = cfg.pseudo
    # A threshold passed in is the oracle's value under that rule, else a fixed plane.
    rule = p.threshold_rule if threshold is None or p.threshold_rule == "oracle" else "fixed"
    fixed = None if threshold is None else label_planes(threshold, p)
    # one CRF per image without an ignore zone, two with one (IRN)
    n_planes = 1 if (fixed[0] == fixed[1] if fixed else tuple(p.band) == (1.0, 1.0)) else 2
    split = split or cfg.data.cam_split
    ds = build_dataset(cfg, split)
    # Scored: the cam split's images (with a mask), like the CAMs; the others are only labelled.
    cam_names = set(ds.names if split == cfg.data.cam_split else build_dataset(cfg, cfg.data.cam_split).names)
    every = ds.names[:limit] if limit else ds.names
    names = distributed.shard(every)  # under torchrun: this rank's images; scores are summed below

    def plain_labels(read_images: bool = True):  # per image: the label without CRF, and what the CRF needs
        for name in names:
            img = None
            if read_images:
                with Image.open(ds.image_path(name)) as pil:
                    img = np.asarray(pil.convert("RGB"))
            saved = np.load(folder / f"{name}.npy", allow_pickle=True).item()
            cam, keys = saved["cam"].astype(np.float32), saved["keys"]
            if img is not None and cam.shape[1:] != img.shape[:2]:
                raise ValueError(
                    f"{folder / name}.npy: maps are {cam.shape[1:]} but the image is {img.shape[:2]}"
                )
            if not np.isfinite(cam).all():
                raise ValueError(f"{folder / name}.npy: maps hold NaN or infinite values; recompute the CAMs")
            thr = image_threshold(cam, rule) if threshold is None else threshold
            planes_used.append(thr)
            fg, bg = label_planes(thr, p)
            assign = _part_assigner(part_folder, name, cam, keys, thr, p)
            yield name, img, cam, keys, thr, assign(pseudo_label(cam, keys, thr, fg, bg)), assign

    def crf_inputs():  # per image one CRF per plane; the label without CRF rides along as the tag
        for name, img, cam, keys, thr, label, assign in plain_labels():
            fg, bg = label_planes(thr, p)
            ids = np.concatenate([[0], keys]).astype(np.int64)
            for plane in (fg,) if n_planes == 1 else (fg, bg):
                yield img, cam_probs(cam, plane), (name, ids, label, assign)

    def with_crf():  # (name, label, label after the CRF)
        bar = progress and distributed.is_main()
        posts = crf_map(crf_inputs(), cfg.crf, len(names) * n_planes, bar, desc=f"pseudo {folder.name}")
        for post_hi, (name, ids, label, assign) in posts:
            post_lo = next(posts)[0] if n_planes == 2 else post_hi
            yield name, label, assign(combine_confident(ids[post_hi.argmax(0)], ids[post_lo.argmax(0)]))

    def with_saved_crf():  # the same, the CRF labels read from crf_labels
        for name, _img, _cam, _keys, _thr, label, _assign in plain_labels(read_images=False):
            label_crf = read_mask_png(crf_labels / f"{name}.png")
            if label_crf.shape != label.shape:
                raise ValueError(f"{crf_labels / name}.png is {label_crf.shape}, the maps {label.shape}")
            yield name, label, label_crf

    K = cfg.data.num_classes
    planes_used: list[float] = []
    meters = {"": ConfusionMeter(K), "_crf": ConfusionMeter(K)}
    pathology = {"": LabelPathologyMeter(), "_crf": LabelPathologyMeter()}
    ignored = {"": 0, "_crf": 0}
    pixels = scored = 0
    for name, label, label_crf in with_crf() if crf_labels is None else with_saved_crf():
        if negatives is not None:
            from .negatives import ignore_negatives

            keys, drop = negatives.masks[name]
            label, label_crf = (ignore_negatives(lab, keys, drop) for lab in (label, label_crf))
        if out is not None:
            save_mask_png(out / f"{name}.png", label_crf if p.crf else label)
        mask, diag = ds.targets(name) if name in cam_names else (None, None)
        gt = None if mask is None else torch.from_numpy(mask.astype(np.int64))
        scored += gt is not None
        pixels += label.size
        for suffix, lab in (("", label), ("_crf", label_crf)):
            lab = torch.from_numpy(lab.astype(np.int64))
            ignored[suffix] += int((lab == IGNORE_INDEX).sum())
            if gt is not None:  # ignore pixels of the label are left out of the score
                keep = lab != IGNORE_INDEX
                meters[suffix].update(torch.where(keep, lab, 0), torch.where(keep, gt, IGNORE_INDEX))
                if diag is not None:
                    pathology[suffix].update(lab, gt, diag)
    for meter in meters.values():
        meter.confusion = distributed.all_reduce_tensor(meter.confusion)
    for patho in pathology.values():
        patho.all_reduce()
    counts = distributed.all_reduce_sum(
        {"pixels": pixels, "scored": scored, "plane_sum": sum(planes_used), "plane_n": len(planes_used),
         **{f"ignored{k}": v for k, v in ignored.items()}}
    )  # fmt: skip
    pixels, ignored = counts["pixels"], {k: counts[f"ignored{k}"] for k in ignored}
    result: dict[str, Any] = {
        "method": folder.name,
        "threshold": threshold,
        "threshold_rule": rule,
        "threshold_mean": counts["plane_sum"] / max(counts["plane_n"], 1),
        "planes": None if fixed is None else list(fixed),
        "assign": "argmax" if part_folder is None else "parts",
    }
    if negatives is not None:  # which classes had negative prototypes, and how many
        result["negatives"] = negatives.summary(list(ds.class_names))
        result["negative_firing"] = negatives.firing(list(ds.class_names))
    for suffix, meter in meters.items():
        scores = meter.compute()
        result.update(
            {
                f"miou{suffix}": scores["miou"],
                f"precision{suffix}": scores["precision"],
                f"recall{suffix}": scores["recall"],
                f"ignore_frac{suffix}": ignored[suffix] / max(pixels, 1),
                f"iou{suffix}": json_iou(scores["iou"]),
            }
        )
        if pathology[suffix].pixels:
            result[f"pathology{suffix}"] = pathology[suffix].compute()
            result[f"pathology_by_class{suffix}"] = pathology[suffix].compute_by_class()
    result.update(
        crf=p.crf, split=split, images=len(every), scored_on=cfg.data.cam_split,
        scored_images=round(counts["scored"]),
    )  # fmt: skip
    return result


def rule_scores(cfg: Config, store: RunStore, method: str) -> dict[str, Any]:
    """A CAM method's maps scored at the ground-truth-free decision of ``pseudo.threshold_rule``.

    The cams stage scores every map at its best threshold (IRN's protocol, an oracle view); this is
    what the same maps give when the background is decided as the pseudo labels decide it. Cached
    beside the maps (``rule_scores.json``) for the method's settings and the rule.

    Returns:
        dict with ``rule``, ``threshold`` (None per image), ``threshold_mean``, ``miou``,
        ``precision``, ``recall`` and, on data with diagnostic masks, ``pathology``
        (:class:`~cpmc_lib.diagnostics.PathologyMeter` at each image's threshold).
    """
    from .io import load_json, save_json

    folder, metrics = _cam_folder(cfg, store, method)
    p = cfg.pseudo
    threshold = rule_threshold(cfg, metrics)
    key = {"method_hash": metrics.get("method_hash"), "rule": p.threshold_rule, "value": threshold}
    cache = folder / "rule_scores.json"
    if cache.is_file():
        saved = load_json(cache)
        if saved.get("key") == key:
            return saved["scores"]
    ds = build_dataset(cfg, cfg.data.cam_split)
    meter, patho, planes = ConfusionMeter(cfg.data.num_classes), None, []
    for name in ds.names:
        saved = np.load(folder / f"{name}.npy", allow_pickle=True).item()
        cam, keys = saved["cam"].astype(np.float32), saved["keys"]
        thr = image_threshold(cam, p.threshold_rule) if threshold is None else threshold
        planes.append(thr)
        gt, diag = ds.targets(name)  # the masks only: the image is not needed
        if gt is None:
            continue
        meter.update(cam_to_mask(cam, keys, thr), gt)
        if diag is not None:
            patho = patho or PathologyMeter(thr)
            patho.update(cam, keys, gt, diag, threshold=thr)
    scores = meter.compute()
    out: dict[str, Any] = {
        "rule": p.threshold_rule,
        "threshold": threshold,
        "threshold_mean": float(np.mean(planes)) if planes else None,
        **{k: scores[k] for k in ("miou", "precision", "recall")},
    }
    if patho is not None:
        out["pathology"] = patho.compute()
    save_json(cache, {"key": key, "scores": out})
    return out


def compare(
    cfg: Config,
    store: RunStore,
    methods: tuple[str, ...],
    limit: int = 0,
    progress: bool = True,
    negatives: NegativeBank | None = None,
) -> dict[str, dict[str, Any]]:
    """Pseudo-label scores of several CAM methods (each under ``pseudo.threshold_rule``), nothing saved.

    Reads each method's maps from the run store (:func:`cpmc_lib.pipeline.ensure` makes them).
    ``limit`` scores the first images only. For ``pseudo.method`` the labels after the CRF are
    read from the pseudo stage when it finished with ``cfg`` (:func:`stage_crf_labels`): the same
    labels, not made twice. Under ``pseudo.negatives`` every method's labels are ignored where the
    run's negative prototypes say so: pass ``negatives`` (:func:`cpmc_lib.negatives.build_bank`)
    to build the bank once for several calls; None builds it here.
    """
    out, parts = {}, part_folder(cfg, store)
    if cfg.pseudo.negatives and negatives is None:
        from .negatives import build_bank  # here, not at the top: CRF worker processes import this module

        negatives = build_bank(cfg, store, progress)
    for m in methods:
        folder, metrics = _cam_folder(cfg, store, m)
        saved = stage_crf_labels(cfg, store) if m == cfg.pseudo.method else None
        out[m] = make_labels(
            cfg, folder, rule_threshold(cfg, metrics), limit=limit, progress=progress, crf_labels=saved,
            part_folder=parts, negatives=negatives if cfg.pseudo.negatives else None,
        )  # fmt: skip
    return out


def compare_zones(
    cfg: Config,
    store: RunStore,
    default: dict[str, Any],
    limit: int = 0,
    progress: bool = True,
    negatives: NegativeBank | None = None,
) -> dict[str, dict[str, Any]]:
    """``pseudo.method``'s labels without an ignore zone, with ``pseudo.band`` and with IRN's fixed
    planes (0.30 / 0.05), by name; ``default`` is :func:`compare`'s result for ``cfg`` on the same
    images, reused for the configuration it equals (the band row is left out when the band is off).
    ``negatives``: as in :func:`compare`."""
    method = cfg.pseudo.method
    irn = {"pseudo.threshold_rule": "fixed", "pseudo.conf_fg": 0.3, "pseudo.conf_bg": 0.05}
    zones = {"no zone": cfg.replace(**{"pseudo.band": (1.0, 1.0)}),
             f"band {list(cfg.pseudo.band)}": cfg if tuple(cfg.pseudo.band) != (1.0, 1.0) else None,
             "IRN 0.30 / 0.05 (fixed)": cfg.replace(**irn)}  # fmt: skip
    return {
        name: default if c == cfg else compare(c, store, (method,), limit, progress, negatives)[method]
        for name, c in zones.items()
        if c is not None
    }


def stage_crf_labels(cfg: Config, store: RunStore) -> Path | None:
    """The pseudo stage's label folder when it holds ``cfg.pseudo.method``'s labels after the CRF.

    That is: the stage finished for ``cfg`` (its hash covers the maps, the rule and the CRF),
    saved the CRF labels (``pseudo.crf``) and labelled every cam-split image (its seg split holds
    them). None otherwise.
    """
    if not cfg.pseudo.crf or not store.is_done("pseudo", stage_hash(cfg, "pseudo")):
        return None
    folder = labels_dir(store)
    names = build_dataset(cfg, cfg.data.cam_split).names
    return folder if all((folder / f"{n}.png").is_file() for n in names) else None


def examples(
    cfg: Config, store: RunStore, samples: list[dict[str, Any]], threshold: float | None
) -> list[list[np.ndarray]]:
    """Rows of [image, ground truth, pseudo label, pseudo label + CRF] of ``cfg.pseudo.method``.

    Args:
        samples: cam-split dataset items without transform (``img`` uint8 (3, H, W), ``mask``, ``name``).
        threshold: the background plane used for the labels; None: per image by
            ``pseudo.threshold_rule`` (the stage result's ``threshold`` is None then).
    """
    from .cams import load_cams
    from .plots import colorize, to_hwc_uint8

    p = cfg.pseudo
    parts = part_folder(cfg, store)
    rows = []
    for s in samples:
        saved = load_cams(store.root, p.method, s["name"])
        cam, keys = saved["cam"].astype(np.float32), saved["keys"]
        img = to_hwc_uint8(s["img"])
        thr = image_threshold(cam, p.threshold_rule) if threshold is None else threshold
        fg, bg = label_planes(thr, p)
        assign = _part_assigner(parts, s["name"], cam, keys, thr, p)
        plain = assign(pseudo_label(cam, keys, thr, fg, bg))
        crf = assign(crf_pseudo_label(img, cam, keys, cfg.crf, thr, fg, bg))
        rows.append([img, colorize(s["mask"]), colorize(plain), colorize(crf)])
    return rows
