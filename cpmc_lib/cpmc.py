"""CPMC put together: the refined / prototype / calibrated maps, their CAM methods and training loss.

:func:`cpmc_maps` runs the steps of :mod:`cpmc_lib.refinement`, :mod:`cpmc_lib.prototypes` and
:mod:`cpmc_lib.calibration` on one network output, in the paper's order::

    cam      = classifier_cam(out["cam"], label)                         step 1
    refined  = refine_with_context(cam, pixel_affinity(context), T)       step 3
    seeds    = prototype_seeds(refined, label, ...)                        step 4
    proto    = prototype CAM of the hierarchical feature under the seeds
    fn, fp   = regions of disagreement between refined and proto, split by attachment   step 5
    cpmc     = calibrated_cam(feature, global + FN prototypes, background + FP prototypes)

The CAM methods "refined", "proto" and "cpmc" (:class:`RefinedCam`, :class:`PrototypeCam`,
:class:`CpmcCam`) plug these into :mod:`cpmc_lib.cams`, which owns multi-scale + flip fusion and
normalisation. That stage scores foreground maps only (IRN's threshold sweep), so the learned
background channel of the prototype maps has to enter the foreground maps:
:func:`foreground_maps` with ``prototypes.bg_mode`` = ``"drop"`` (ignore it), ``"subtract"``
(``ReLU(P_c - P_bg)``) or ``"gate"`` (``P_c`` where it beats ``P_bg``, else 0). Without it the FP
prototypes, which only raise the background channel, could not change the score.

Defaults, tuned on synthetic seed 0 only with ``benchmarks/tune_cpmc.py`` on the pretrained
classifier of the default config: affinity over the concatenated stages with ``power=32`` (``--grid
refine``), SFC arg-max seeds from the refined CAM with the background x 0.05 (the best plain
prototype CAM of ``--grid proto``, so the calibration is measured against the strongest baseline),
``bg_mode`` "subtract", and the connectivity-split calibration of :mod:`cpmc_lib.calibration`
(``pairing="classifier"``, ``detached="fp"``, ``fp_radius=0``; ``--grid cpmc`` and ``--grid fpfn``).
``--grid final`` prints the defaults' row and the ablations of its parts (FN only, FP only, no
split, FP everywhere, the first reading ``pairing="proto"``); nothing here quotes their numbers.

Training (:func:`cpmc_loss`): the classification loss plus SIPE's general-specific consistency
``mean |R - P*|`` between the refined classifier CAM and the calibrated prototype CAM (both
max-normalised), weighted by ``calibration.train_consistency_weight``.

Shapes: ``B`` images, ``K`` classes with background at index 0, ``h, w`` the CAM grid.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .calibration import (
    attached_to,
    attachment_gate,
    calibrated_cam,
    false_negative_regions,
    false_positive_regions,
    fp_suppression,
    local_prototypes,
    pure_prototypes,
    region_labels,
)
from .cams import JointCam, OutputCam
from .config import CalibrationConfig, Config, PrototypeConfig, RefinementConfig
from .prototypes import (
    cluster_prototypes,
    one_hot_labels,
    prototype_seeds,
    prototype_set_cam,
    structure_aware_seeds,
)
from .refinement import (
    ContextProjection,
    classifier_cam,
    context_features,
    label_mask,
    max_normalize,
    pixel_affinity,
    refine_with_context,
)

__all__ = [
    "BG_MODES",
    "CpmcCam",
    "JointCpmcCam",
    "PrototypeCam",
    "RefinedCam",
    "consistency_loss",
    "cpmc_loss",
    "cpmc_maps",
    "foreground_maps",
    "reference_labels",
]

BG_MODES = ("drop", "subtract", "gate")


def foreground_maps(cam: torch.Tensor, mode: str = "drop") -> torch.Tensor:
    """Foreground maps of a CAM with a background channel, for the threshold-sweep evaluation.

    Args:
        cam: (B, K, h, w) maps, background at index 0.
        mode: ``"drop"`` - the class channels as they are; ``"subtract"`` - ``ReLU(P_c - P_bg)``;
            ``"gate"`` - ``P_c`` where ``P_c > P_bg``, else 0.

    Returns:
        (B, K-1, h, w) non-negative maps (not re-normalised).
    """
    fg, bg = cam[:, 1:], cam[:, :1]
    if mode == "drop":
        return fg
    if mode == "subtract":
        return F.relu(fg - bg)
    if mode == "gate":
        return fg * (fg > bg)
    raise ValueError(f"unknown bg_mode {mode!r}; modes: {', '.join(BG_MODES)}")


def reference_labels(refined: torch.Tensor, label: torch.Tensor, cal: CalibrationConfig) -> torch.Tensor:
    """Labels of the refined classifier CAM that the FN/FP regions are measured against.

    ``ref_rule="argmax"``: arg-max with the background scaled by ``ref_bg_factor``;
    ``"quantile"``: background where the highest class value lies in the image's lowest
    ``ref_bg_quantile`` fraction, else the arg-max class (a per-image rule).

    Args:
        refined: (B, K, h, w) refined CAM.
        label: (B, K-1) multi-hot labels.

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


def cpmc_maps(
    out: dict[str, Any],
    label: torch.Tensor,
    refinement: RefinementConfig,
    prototypes: PrototypeConfig,
    calibration: CalibrationConfig,
    img: torch.Tensor | None = None,
    projection: ContextProjection | None = None,
) -> dict[str, torch.Tensor]:
    """Every CPMC map of one batch of network outputs.

    Args:
        out: :meth:`~cpmc_lib.models.CamNet.forward`'s dict (``cam``, ``feat``, ``hie``, ``stages``).
        label: (B, K-1) multi-hot labels.
        refinement, prototypes, calibration: the three stage configs.
        img: (B, 3, H, W) images (image context sources and the learned projection).
        projection: SFC's learned context projection (``refinement.source="projection"``).

    Returns:
        dict of (B, K, h, w) maps with background at 0: ``cam`` (classifier CAM), ``refined``,
        ``proto`` (max-normalised prototype CAM), ``cpmc`` (calibrated); (B, K, h, w) bool
        ``seeds``, ``fn``, ``fp`` regions. An all-zero ``out["cam"]`` or an empty label gives
        all-zero class channels (all background).

    Raises:
        ValueError: ``out["cam"]`` holds NaN or infinite values.
    """
    if not torch.isfinite(out["cam"]).all():
        # The prototype maps would hide it: seeds from NaN are empty, so "proto" looks valid.
        raise ValueError("cpmc_maps: out['cam'] holds NaN or infinite values (a diverged classifier?)")
    cam = classifier_cam(out["cam"].float(), label)
    r = refinement
    ctx = context_features(r.source, out["feat"], out.get("stages", ()), out.get("hie"), img, projection)
    refined = refine_with_context(cam, pixel_affinity(ctx.float(), r.power), r.iterations)

    p = prototypes
    feat = (out["hie"] if p.feature == "hie" else out["feat"]).float()
    if p.seed_rule == "iou":
        seeds = structure_aware_seeds(refined, ctx.float(), label, p.bg_factor)
    else:
        seeds = prototype_seeds(
            refined,
            label,
            p.seed_rule,
            p.bg_factor,
            p.fg_threshold,
            p.bg_threshold,
            p.fg_quantile,
            p.bg_quantile,
        )
    glob = cluster_prototypes(feat, seeds, p.clusters, p.min_size)
    proto = max_normalize(prototype_set_cam(feat, *glob))

    c = calibration
    k = cam.shape[1]
    # Regions are hard masks: no gradient flows through their selection.
    with torch.no_grad():
        ref_lab = reference_labels(refined, label, c)
        proto_lab = region_labels(proto, label, c.proto_bg_factor)
        a, b = (ref_lab, proto_lab) if c.pairing == "proto" else (proto_lab, ref_lab)
        if c.pairing not in ("proto", "classifier"):
            raise ValueError(f"unknown calibration.pairing {c.pairing!r}; pairings: proto, classifier")
        fn = false_negative_regions(a, b, k)
        fp = false_positive_regions(a, b, k) if c.use_fp else torch.zeros_like(seeds)
        if c.detached != "keep":
            if c.detached not in ("drop", "fp"):
                raise ValueError(f"unknown calibration.detached {c.detached!r}; choices: keep, drop, fp")
            attached = attached_to(fn, one_hot_labels(b, k))
            if c.detached == "fp" and c.use_fp:
                fp = fp | (fn & ~attached)
            fn = attached
        if not c.use_fn:
            fn = torch.zeros_like(seeds)
        scope = None
        if c.use_fp and c.fp_radius >= 0:
            r = c.fp_radius
            scope = F.max_pool2d(fp.float(), 2 * r + 1, stride=1, padding=r).bool()
    fn_local = local_prototypes(feat, fn, c.clusters, c.min_size) if c.use_fn else None
    if fn_local is not None and c.fn_purity:  # FN clusters nearer the background seed are dropped
        fn_local = pure_prototypes(fn_local, glob)
    fp_local = local_prototypes(feat, fp, c.clusters, c.min_size) if c.use_fp else None
    raise_bg = fp_local if c.fp_action in ("background", "both") else None
    fn_scope = None
    if fn_local is not None and c.fn_radius >= 0:  # FN prototypes act near the object they complete
        with torch.no_grad():
            r = c.fn_radius
            near = fn | (one_hot_labels(b, k) & label_mask(label).bool()[..., None, None])
            fn_scope = F.max_pool2d(near.float(), 2 * r + 1, stride=1, padding=r).bool()
    calibrated = calibrated_cam(feat, glob, fn_local, raise_bg, scope, fn_scope)
    if fp_local is not None and c.fp_action in ("suppress", "both"):  # FP prototypes lower their class
        calibrated = max_normalize(fp_suppression(calibrated, prototype_set_cam(feat, *fp_local), scope))
    if c.gate != "none":  # class regions touching no classifier evidence of the class are noise
        with torch.no_grad():  # anchor: the refined CAM's labels, or the raw CAM's (no affinity spread)
            anchor = ref_lab if c.gate == "attached" else region_labels(cam, label, c.ref_bg_factor)
        calibrated = max_normalize(attachment_gate(calibrated, label, anchor, c.proto_bg_factor))
    if c.fuse_refined:
        fused = calibrated + c.fuse_refined * max_normalize(refined)
        calibrated = max_normalize(fused) * label_mask(label)[..., None, None]
    return {
        "cam": cam,
        "refined": refined,
        "proto": proto,
        "cpmc": calibrated,
        "seeds": seeds,
        "fn": fn,
        "fp": fp,
    }


def consistency_loss(
    cam: torch.Tensor, proto: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """SIPE's general-specific consistency: mean absolute difference of two normalised maps.

    Args:
        cam: (B, K, h, w) classifier (refined) CAM with background.
        proto: (B, K, h, w) (calibrated) prototype CAM with background.
        valid: optional (B, 1, h, w) mask of valid pixels (crop padding excluded).

    Returns:
        Scalar ``mean |cam - proto|`` over channels and valid pixels; gradients reach both maps.
    """
    diff = (cam - proto).abs()
    if valid is None:
        return diff.mean()
    return (diff * valid).sum() / (valid.sum() * cam.shape[1]).clamp(min=1)


def cpmc_loss(
    out: dict[str, Any],
    label: torch.Tensor,
    cfg: Config,
    img: torch.Tensor | None = None,
    projection: ContextProjection | None = None,
) -> dict[str, torch.Tensor]:
    """CPMC's training loss: classification + ``train_consistency_weight`` x consistency.

    Args:
        out: :class:`~cpmc_lib.models.CamNet` output of the training batch (with gradients).
        label: (B, K-1) multi-hot labels.
        cfg: the pipeline config (reads ``refinement``, ``prototypes``, ``calibration``).
        img: (B, 3, H, W) the batch (needed by image context sources).
        projection: the learned context projection, trained through the consistency term.

    Returns:
        dict with ``loss`` (to backpropagate), ``cls`` and ``cons`` (detached parts).
    """
    cls = F.multilabel_soft_margin_loss(out["logits"].float(), label)
    weight = cfg.calibration.train_consistency_weight
    if weight <= 0:
        return {"loss": cls, "cls": cls.detach(), "cons": cls.new_zeros(())}
    maps = cpmc_maps(out, label, cfg.refinement, cfg.prototypes, cfg.calibration, img, projection)
    # Both sides max-normalised (SIPE): the refined CAM has shrunk maxima after propagation.
    cons = consistency_loss(max_normalize(maps["refined"]), maps["cpmc"])
    return {"loss": cls + weight * cons, "cls": cls.detach(), "cons": cons.detach()}


class _CpmcMethod(OutputCam):
    """Shared part of the CPMC CAM methods: run :func:`cpmc_maps`, return one map's foreground."""

    key = "cpmc"

    def __init__(self, model, scales=(1.0,), flip=True, cfg: Config | None = None) -> None:
        super().__init__(model, scales, flip)
        self.cfg = cfg or Config()

    @classmethod
    def from_config(cls, model, cfg: Config, **kwargs: Any) -> _CpmcMethod:
        return cls(model, scales=cfg.cams.scales, flip=cfg.cams.flip, cfg=cfg, **kwargs)

    def _maps(self, out: dict[str, Any], img: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.cfg
        return cpmc_maps(out, label, c.refinement, c.prototypes, c.calibration, img)

    def _foreground(self, maps: dict[str, torch.Tensor], key: str) -> torch.Tensor:
        if key == "refined":  # the classifier CAM's own background 1 - max stays out (IRN)
            return maps["refined"][:, 1:]
        return foreground_maps(maps[key], self.cfg.prototypes.bg_mode)

    def from_output(self, out: dict[str, Any], img: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self._foreground(self._maps(out, img, label), self.key)


class JointCpmcCam(_CpmcMethod, JointCam):
    """Several of the maps above from one forward pass and one :func:`cpmc_maps` call.

    They are intermediates of the same computation, so the cams stage makes the missing ones
    together (about the cost of one); see :class:`~cpmc_lib.cams.JointCam` for the output.
    """

    group = ("refined", "proto", "cpmc")

    def __init__(self, model, scales=(1.0,), flip=True, cfg: Config | None = None, parts=None):
        JointCam.__init__(self, model, scales, flip, parts)
        self.cfg = cfg or Config()

    def from_output(self, out: dict[str, Any], img: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        maps = self._maps(out, img, label)
        # (N, M * (K-1), h, w): fused over scales and flips like any map, split in __call__
        return torch.cat([self._foreground(maps, k) for k in self.parts], dim=1)


class RefinedCam(_CpmcMethod):
    """The classifier CAM after context refinement (``refinement``)."""

    key = "refined"


class PrototypeCam(_CpmcMethod):
    """The prototype CAM (IS-CAM) seeded by the refined CAM (``prototypes``)."""

    key = "proto"


class CpmcCam(_CpmcMethod):
    """The calibrated CPMC map: global + FN local prototypes, background + FP local prototypes."""

    key = "cpmc"
