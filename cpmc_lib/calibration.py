"""CPMC step 5: mutual calibration with false-negative and false-positive local prototypes.

Two maps, each right where the other is wrong: the refined classifier CAM finds the object (it
fires on the discriminative part) but not all of it; the prototype CAM reaches the rest of the
body, and also anything that looks like it - distractors, context. Let ``L_C`` be the refined
classifier CAM's labels and ``L_P`` the prototype CAM's (arg-max over background and the image's
classes). The default (``pairing="classifier"``, ``detached="fp"``, tuned on synthetic seed 0)
reads the regions off the prototype CAM's *extra* pixels ``E_c = {L_P = c, L_C != c}``
(:func:`false_negative_regions` with the prototype CAM as reference):

- **false negatives** of class ``c`` (the classifier's misses): the part of ``E_c`` 8-connected to
  ``{L_C = c}`` (:func:`attached_to`) - a missed body part is attached to its object;
- **false positives** of class ``c`` (the prototype's noise): the rest of ``E_c``, touching no
  classifier evidence, plus ``{L_C = c, L_P = 0}``.

A *local prototype* is the masked average of the hierarchical feature over such a region
(optionally one per k-means cluster, :func:`~cpmc_lib.prototypes.cluster_prototypes`). FN
local prototypes join class ``c``'s prototype set, FP local prototypes join the background's, and
the calibrated CAM takes, per class, the highest cosine activation over its set
(:func:`calibrated_cam`). FP prototypes act *locally*: they raise the background only within
``fp_radius`` cells of the region they came from, because a distractor shares the object's body
features and a global background prototype from it would erase the true body as well.

``pairing="proto"`` with ``detached="keep"`` is the first, literal reading (the prototype CAM's
errors measured against the refined CAM: FN = ``{L_C = c, L_P != c}``, FP = ``{L_P = c, L_C = 0}``);
on the benchmark its FN region is mostly context and its FP region mostly recovered body, so it
changes little or hurts (the ablation chapter shows it).

Shapes: ``B`` images, ``K`` classes with background at index 0, ``C`` feature channels,
``M`` prototypes per class, ``h, w`` the CAM grid.

Example:
    >>> ref = torch.tensor([[[0, 1, 1, 0]]]); proto = torch.tensor([[[0, 0, 1, 1]]])
    >>> false_negative_regions(ref, proto, 2)[0, 1].tolist(), false_positive_regions(ref, proto, 2)[0, 1].tolist()
    ([[False, True, False, False]], [[False, False, False, True]])
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .prototypes import cluster_prototypes, one_hot_labels, prototype_set_cam
from .refinement import label_mask, max_normalize

if TYPE_CHECKING:
    from .config import CalibrationConfig

__all__ = [
    "area_cells",
    "attached_to",
    "attachment_gate",
    "calibrated_cam",
    "calibration_regions",
    "false_negative_regions",
    "false_positive_regions",
    "fp_suppression",
    "grid_cells",
    "local_prototypes",
    "mutual_calibration",
    "radius_cells",
    "reference_labels",
    "region_labels",
]


def region_labels(cam: torch.Tensor, label: torch.Tensor, bg_factor: float = 1.0) -> torch.Tensor:
    """Arg-max labels over background (scaled by ``bg_factor``) and the image's classes.

    Args:
        cam: (B, K, h, w) map with background at 0.
        label: (B, K-1) multi-hot labels (absent classes never win).

    Returns:
        (B, h, w) int64 labels in 0..K-1.
    """
    scaled = torch.cat([cam[:, :1] * bg_factor, cam[:, 1:]], dim=1)
    absent = torch.cat([label.new_zeros(label.shape[0], 1), 1 - label], dim=1).bool()
    return scaled.masked_fill(absent[..., None, None], -1.0).argmax(1)


def false_negative_regions(ref: torch.Tensor, proto: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixels the reference assigns to a class that the calibrated map does not.

    Args:
        ref: (B, h, w) labels of the reference (refined classifier CAM).
        proto: (B, h, w) labels of the map being calibrated (prototype CAM).
        num_classes: K.

    Returns:
        (B, K, h, w) bool; channel ``c >= 1`` is ``ref == c and proto != c``; channel 0 is empty.
    """
    fn = one_hot_labels(ref, num_classes) & ~one_hot_labels(proto, num_classes)
    fn[:, 0] = False
    return fn


def false_positive_regions(ref: torch.Tensor, proto: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixels the calibrated map assigns to a class that the reference calls background.

    Args:
        ref: (B, h, w) labels of the reference (refined classifier CAM).
        proto: (B, h, w) labels of the map being calibrated (prototype CAM).
        num_classes: K.

    Returns:
        (B, K, h, w) bool; channel ``c >= 1`` is ``proto == c and ref == 0``; channel 0 is empty.
    """
    fp = one_hot_labels(proto, num_classes) & (ref == 0)[:, None]
    fp[:, 0] = False
    return fp


def attached_to(region: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Pixels of ``region`` 8-connected to ``anchor`` through ``region`` (reconstruction by dilation).

    An object part a map misses touches the part it finds; a distractor blob or a patch of
    context elsewhere in the image does not. Grows ``anchor`` one cell at a time inside
    ``region | anchor`` until it stops changing.

    Args:
        region: (B, K, h, w) bool, e.g. false-negative regions.
        anchor: (B, K, h, w) bool, e.g. the calibrated map's own class regions.

    Returns:
        (B, K, h, w) bool, a subset of ``region``.

    Example:
        >>> region = torch.tensor([[[[1, 0, 0, 1]]]]).bool(); anchor = torch.tensor([[[[0, 1, 0, 0]]]]).bool()
        >>> attached_to(region, anchor).int().tolist()
        [[[[1, 0, 0, 0]]]]
    """
    allowed = (region | anchor).float()
    grown = anchor.float()
    for _ in range(region.shape[-1] * region.shape[-2]):
        nxt = F.max_pool2d(grown, 3, stride=1, padding=1) * allowed
        if torch.equal(nxt, grown):
            break
        grown = nxt
    return grown.bool() & region


def local_prototypes(
    feat: torch.Tensor, regions: torch.Tensor, max_clusters: int = 1, min_size: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Local prototypes of FN or FP regions: masked feature averages, up to M clusters per region.

    Args:
        feat: (B, C, h, w) hierarchical features.
        regions: (B, K, h, w) bool regions (:func:`false_negative_regions` or
            :func:`false_positive_regions`).
        max_clusters: M, k-means clusters per region.
        min_size: regions smaller than this (grid cells) give no prototype.

    Returns:
        ``(proto, valid)``: (B, K, M, C) and (B, K, M) bool.
    """
    return cluster_prototypes(feat, regions, max_clusters, min_size)


def calibrated_cam(
    feat: torch.Tensor,
    proto: tuple[torch.Tensor, torch.Tensor],
    fn: tuple[torch.Tensor, torch.Tensor] | None = None,
    fp: tuple[torch.Tensor, torch.Tensor] | None = None,
    fp_scope: torch.Tensor | None = None,
    fn_scope: torch.Tensor | None = None,
) -> torch.Tensor:
    """Final CPMC map: per class the max activation over its global and FN local prototypes,
    for background over its global and all FP local prototypes; max-normalised.

    Args:
        feat: (B, C, h, w) hierarchical features.
        proto: global prototype sets ``(B, K, M, C)``, ``(B, K, M)`` valid.
        fn: FN local prototypes ``(B, K, M', C)``, ``(B, K, M')``; joined to their class.
        fp: FP local prototypes ``(B, K, M'', C)``, ``(B, K, M'')``; all joined to background.
        fp_scope: optional (B, K, h, w) bool: where the FP prototypes taken from class ``k``'s
            region may raise the background (e.g. that region dilated); None = everywhere.
        fn_scope: optional (B, K, h, w) bool: where class ``k``'s FN prototypes may raise it (e.g.
            its object and FN region dilated, so that body look-alikes elsewhere stay out); None = everywhere.

    Returns:
        (B, K, h, w) max-normalised calibrated CAM; absent classes stay 0.
    """
    cam = prototype_set_cam(feat, *proto)
    if fn is not None:
        act = prototype_set_cam(feat, *fn)  # FN sets of background are empty
        cam = torch.maximum(cam, act if fn_scope is None else act * fn_scope)
    if fp is not None:
        # Every FP prototype describes background, whichever class it was taken from.
        bg = prototype_set_cam(feat, *fp)  # (B, K, h, w): per source class
        if fp_scope is not None:
            bg = bg * fp_scope
        bg = bg.amax(1, keepdim=True)
        cam = torch.cat([torch.maximum(cam[:, :1], bg), cam[:, 1:]], dim=1)
    return max_normalize(cam)


def reference_labels(refined: torch.Tensor, label: torch.Tensor, cal: CalibrationConfig) -> torch.Tensor:
    """Labels ``L_C`` of the refined classifier CAM that the FN/FP regions are measured against.

    ``ref_rule="argmax"``: arg-max with the background scaled by ``ref_bg_factor``;
    ``"quantile"``: background where the highest class value lies in the image's lowest
    ``ref_bg_quantile`` fraction, else the arg-max class (a per-image rule).

    Args:
        refined: (B, K, h, w) refined CAM.
        label: (B, K-1) multi-hot labels.
        cal: the calibration settings (reads ``ref_rule``, ``ref_bg_factor``, ``ref_bg_quantile``).

    Returns:
        (B, h, w) int64 labels.
    """
    if cal.ref_rule == "argmax":
        return region_labels(refined, label, cal.ref_bg_factor)
    if cal.ref_rule == "quantile":
        fg = max_normalize(refined[:, 1:])
        top, cls = fg.amax(1), region_labels(refined, label, 0.0)
        cut = torch.quantile(top.flatten(1), cal.ref_bg_quantile, dim=-1)[:, None, None]
        return torch.where(top <= cut, 0, cls)
    raise ValueError(f"unknown calibration.ref_rule {cal.ref_rule!r}; rules: argmax, quantile")


def calibration_regions(
    refined: torch.Tensor,
    proto: torch.Tensor,
    label: torch.Tensor,
    cal: CalibrationConfig,
    fp_radius: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Step 5's policy: the FN and FP regions of two maps and where the FP prototypes act.

    1. labels: ``L_C`` of the refined CAM (:func:`reference_labels`), ``L_P`` of the prototype
       CAM (:func:`region_labels`, background x ``proto_bg_factor``);
    2. pairing: ``"classifier"`` measures the refined CAM's misses against the prototype CAM
       (regions from ``(L_P, L_C)``), ``"proto"`` the prototype CAM's errors against the refined
       CAM (from ``(L_C, L_P)``): :func:`false_negative_regions`, :func:`false_positive_regions`;
    3. attachment split (``detached``): FN components not 8-connected to the second map's own
       class region (:func:`attached_to`) are kept (``"keep"``), dropped (``"drop"``) or made FP
       regions (``"fp"``);
    4. ``use_fn`` / ``use_fp`` switch a region off (all False);
    5. FP scope: the FP regions dilated by ``fp_radius`` cells (None, everywhere, when
       ``fp_radius`` < 0 or FP is off).

    Args:
        refined: (B, K, h, w) refined classifier CAM, background at 0.
        proto: (B, K, h, w) max-normalised prototype CAM.
        label: (B, K-1) multi-hot labels.
        cal: the calibration settings.
        fp_radius: the FP scope's radius in cells of this grid (``cal.fp_radius`` when None;
            :func:`grid_cells` converts it for grids other than ``grid_ref``).

    Returns:
        ``(fn, fp, scope)``: (B, K, h, w) bool regions and the (B, K, h, w) bool FP scope or None.
        Hard masks: no gradient flows through them.
    """
    k = refined.shape[1]
    with torch.no_grad():
        ref_lab = reference_labels(refined, label, cal)
        proto_lab = region_labels(proto, label, cal.proto_bg_factor)
        a, b = (ref_lab, proto_lab) if cal.pairing == "proto" else (proto_lab, ref_lab)
        if cal.pairing not in ("proto", "classifier"):
            raise ValueError(f"unknown calibration.pairing {cal.pairing!r}; pairings: proto, classifier")
        fn = false_negative_regions(a, b, k)
        fp = false_positive_regions(a, b, k) if cal.use_fp else torch.zeros_like(fn)
        if cal.detached != "keep":
            if cal.detached not in ("drop", "fp"):
                raise ValueError(f"unknown calibration.detached {cal.detached!r}; choices: keep, drop, fp")
            attached = attached_to(fn, one_hot_labels(b, k))
            if cal.detached == "fp" and cal.use_fp:
                fp = fp | (fn & ~attached)
            fn = attached
        if not cal.use_fn:
            fn = torch.zeros_like(fn)
        scope = None
        r = cal.fp_radius if fp_radius is None else fp_radius
        if cal.use_fp and r >= 0:
            scope = F.max_pool2d(fp.float(), 2 * r + 1, stride=1, padding=r).bool()
    return fn, fp, scope


def fp_suppression(cam: torch.Tensor, fp_act: torch.Tensor, scope: torch.Tensor | None = None) -> torch.Tensor:
    """FP local prototypes that lower their class: ``P_c`` is kept only where it beats ``D_c``.

    ``D_c`` is the activation of the FP local prototypes taken from class ``c``'s false-positive
    region (noise the class's prototype fired on). Where ``D_c >= P_c`` inside ``scope`` the pixel
    looks more like that noise than like the class, and class ``c`` is set to 0 there; the
    background channel and the other classes are unchanged.

    Args:
        cam: (B, K, h, w) calibrated prototype CAM, background at 0.
        fp_act: (B, K, h, w) per-class FP prototype activation (:func:`prototype_set_cam` of the FP sets).
        scope: optional (B, K, h, w) bool: where class ``c`` may be lowered; None = everywhere.

    Returns:
        (B, K, h, w), ``cam`` with suppressed class values.

    Example:
        >>> cam = torch.tensor([[[[0.2, 0.2]], [[0.9, 0.5]]]]); act = torch.tensor([[[[0.0, 0.0]], [[0.6, 0.8]]]])
        >>> fp_suppression(cam, act)[0, 1].tolist()
        [[0.8999999761581421, 0.0]]
    """
    lower = fp_act >= cam
    if scope is not None:
        lower = lower & scope
    lower[:, 0] = False
    return cam.masked_fill(lower, 0.0)


def attachment_gate(cam: torch.Tensor, label: torch.Tensor, ref: torch.Tensor, bg_factor: float = 1.0) -> torch.Tensor:
    """Keep each class of the calibrated map only where its region is attached to classifier evidence.

    Let ``L`` be the calibrated map's labels (:func:`region_labels`) and ``ref`` the refined
    classifier CAM's. A component of ``{L = c}`` that touches ``{ref = c}`` (8-connected,
    :func:`attached_to`) is the object and what the prototypes completed around it; one that
    touches nothing the classifier assigned to ``c`` - a distractor sharing the body features, a
    patch of context elsewhere - is noise, and class ``c`` is set to 0 on it.

    Args:
        cam: (B, K, h, w) calibrated map, background at 0.
        label: (B, K-1) multi-hot labels.
        ref: (B, h, w) labels of the refined classifier CAM.
        bg_factor: background scale of the calibrated map's arg-max.

    Returns:
        (B, K, h, w) gated map (background channel unchanged).

    Example:
        >>> cam = torch.tensor([[[[0.1, 0.1, 0.1, 0.1]], [[0.9, 0.8, 0.0, 0.7]]]])
        >>> ref = torch.tensor([[[1, 0, 0, 0]]])
        >>> attachment_gate(cam, torch.ones(1, 1), ref)[0, 1].tolist()
        [[0.8999999761581421, 0.800000011920929, 0.0, 0.0]]
    """
    k = cam.shape[1]
    region = one_hot_labels(region_labels(cam, label, bg_factor), k)
    region[:, 0] = False
    anchor = one_hot_labels(ref, k) & region
    detached = region & ~attached_to(region, anchor)
    return cam.masked_fill(detached, 0.0)


def area_cells(cells: int, cal: CalibrationConfig, grid: tuple[int, int]) -> int:
    """An area of ``cells`` cells of the ``grid_ref`` x ``grid_ref`` grid, in cells of an ``(h, w)`` grid.

    It keeps its fraction of the grid: ``max(1, round(cells * s**2))`` cells with
    ``s = sqrt(h * w) / grid_ref`` (halves round up); ``grid_ref=0`` returns ``cells`` as written.
    The smallest region of ``calibration.min_size`` and ``prototypes.min_size`` alike.

    Example:
        >>> from cpmc_lib.config import CalibrationConfig
        >>> cal = CalibrationConfig(grid_ref=16)
        >>> area_cells(2, cal, (16, 16)), area_cells(2, cal, (32, 32)), area_cells(2, cal, (8, 8))
        (2, 8, 1)
    """
    if cal.grid_ref <= 0:
        return cells
    s2 = grid[0] * grid[1] / cal.grid_ref**2
    return max(1, math.floor(cells * s2 + 0.5))


def radius_cells(cells: int, cal: CalibrationConfig, grid: tuple[int, int]) -> int:
    """A reach of ``cells`` cells of the ``grid_ref`` x ``grid_ref`` grid, in cells of an ``(h, w)`` grid.

    ``round(cells * s)`` with ``s = sqrt(h * w) / grid_ref`` (halves round up); -1 (everywhere)
    stays -1 and ``grid_ref=0`` returns ``cells`` as written. The reach of ``calibration.fp_radius``
    and ``calibration.fn_radius`` alike.

    Example:
        >>> from cpmc_lib.config import CalibrationConfig
        >>> cal = CalibrationConfig(grid_ref=16)
        >>> radius_cells(1, cal, (16, 16)), radius_cells(1, cal, (32, 32)), radius_cells(-1, cal, (32, 32))
        (1, 2, -1)
    """
    if cal.grid_ref <= 0 or cells < 0:
        return cells
    return math.floor(cells * math.sqrt(grid[0] * grid[1]) / cal.grid_ref + 0.5)


def grid_cells(cal: CalibrationConfig, grid: tuple[int, int]) -> tuple[int, int]:
    """``calibration.fp_radius`` and ``min_size`` in cells of an ``(h, w)`` CAM grid.

    Both are written for a ``grid_ref`` x ``grid_ref`` grid and keep their fraction of the grid
    (:func:`radius_cells`, :func:`area_cells`); ``grid_ref=0`` returns them as written.

    Example:
        >>> from cpmc_lib.config import CalibrationConfig
        >>> cal = CalibrationConfig(fp_radius=1, min_size=2, grid_ref=16)
        >>> grid_cells(cal, (16, 16)), grid_cells(cal, (32, 32)), grid_cells(cal, (8, 8))
        ((1, 2), (2, 8), (1, 1))
    """
    return radius_cells(cal.fp_radius, cal, grid), area_cells(cal.min_size, cal, grid)


def mutual_calibration(
    feat: torch.Tensor,
    glob: tuple[torch.Tensor, torch.Tensor],
    cam: torch.Tensor,
    refined: torch.Tensor,
    proto: torch.Tensor,
    label: torch.Tensor,
    cal: CalibrationConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 5 as a whole: the calibrated CAM of the global prototypes, completed by FN and cleaned by
    FP local prototypes, with the guards of the configuration.

    1. regions (:func:`calibration_regions`): FN and FP cells of the two maps, and the FP scope;
    2. local prototypes (:func:`local_prototypes`) of each region (``use_fn`` / ``use_fp``);
    3. FN prototypes act within ``fn_radius`` cells of their region and of the map's own region of
       the class (-1: everywhere), so that body look-alikes elsewhere stay out;
    4. :func:`calibrated_cam`: FN prototypes join their class, FP prototypes raise the background
       (``fp_action`` "background" or "both"); with "suppress" or "both" they also lower their
       class where they match better (:func:`fp_suppression`);
    5. the attachment gate (``gate``, part of the FP side): class regions touching no classifier
       evidence - the refined CAM's labels, or the raw CAM's - are set to 0 (:func:`attachment_gate`).

    Args:
        feat: (B, C, h, w) prototype features.
        glob: the global prototype sets ``(B, K, M, C)``, ``(B, K, M)`` valid (step 4).
        cam: (B, K, h, w) classifier CAM with background (the gate's anchor with ``gate="attached_cam"``).
        refined: (B, K, h, w) refined classifier CAM.
        proto: (B, K, h, w) max-normalised prototype CAM.
        label: (B, K-1) multi-hot labels.
        cal: the calibration settings; its cell counts are written for the ``grid_ref`` grid
            (:func:`grid_cells`) and converted to this one.

    Returns:
        ``(calibrated, fn, fp)``: the (B, K, h, w) max-normalised calibrated CAM and the
        (B, K, h, w) bool FN and FP regions.
    """
    grid = cam.shape[-2:]
    fp_radius, min_size = grid_cells(cal, grid)  # fractions of the grid -> cells of this one
    fn, fp, scope = calibration_regions(refined, proto, label, cal, fp_radius)
    fn_local = local_prototypes(feat, fn, cal.clusters, min_size) if cal.use_fn else None
    fp_local = local_prototypes(feat, fp, cal.clusters, min_size) if cal.use_fp else None
    raise_bg = fp_local if cal.fp_action in ("background", "both") else None
    fn_scope = None
    fn_radius = radius_cells(cal.fn_radius, cal, grid)
    if fn_local is not None and fn_radius >= 0:  # FN prototypes act near the object they complete
        with torch.no_grad():
            k, r = cam.shape[1], fn_radius
            own = reference_labels(refined, label, cal) if cal.pairing == "classifier" else region_labels(
                proto, label, cal.proto_bg_factor
            )  # the map whose misses the FN regions are
            near = fn | (one_hot_labels(own, k) & label_mask(label).bool()[..., None, None])
            fn_scope = F.max_pool2d(near.float(), 2 * r + 1, stride=1, padding=r).bool()
    calibrated = calibrated_cam(feat, glob, fn_local, raise_bg, scope, fn_scope)
    if fp_local is not None and cal.fp_action in ("suppress", "both"):  # FP prototypes lower their class
        calibrated = max_normalize(fp_suppression(calibrated, prototype_set_cam(feat, *fp_local), scope))
    if cal.gate != "none" and cal.use_fp:  # FP side: class regions touching no classifier evidence are noise
        with torch.no_grad():  # anchor: the refined CAM's labels, or the raw CAM's (no affinity spread)
            anchor = reference_labels(refined, label, cal) if cal.gate == "attached" else region_labels(
                cam, label, cal.ref_bg_factor
            )
        calibrated = max_normalize(attachment_gate(calibrated, label, anchor, cal.proto_bg_factor))
    return calibrated, fn, fp
