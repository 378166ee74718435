"""CPMC put together: the refined, prototype and calibrated maps of one batch, in the paper's order.

:func:`cpmc_maps` runs the steps of :mod:`cpmc_lib.refinement`, :mod:`cpmc_lib.prototypes` and
:mod:`cpmc_lib.calibration` on one network output::

    cam      = classifier_cam(out["cam"], label)                         step 1
    refined  = refine_with_context(cam, pixel_affinity(context), T)       step 3
    seeds    = prototype_seeds(refined, label, ...)                        step 4
    proto    = prototype CAM of the hierarchical feature under the seeds
    cpmc, fn, fp = mutual_calibration(feature, prototypes, cam, refined, proto, label)   step 5

The CAM methods "refined", "proto" and "cpmc" that the cams stage saves and scores wrap this
function (:mod:`cpmc_lib.cam_methods`); their foreground maps come from :func:`foreground_maps`
with ``prototypes.bg_mode`` = ``"drop"`` (ignore the background channel), ``"subtract"``
(``ReLU(P_c - P_bg)``) or ``"gate"`` (``P_c`` where it beats ``P_bg``, else 0).

Defaults, tuned on synthetic seed 0 only with ``benchmarks/tune_cpmc.py`` on the pretrained
classifier of the default config: affinity over the concatenated stages with ``power=32`` (``--grid
refine``), SFC arg-max seeds from the refined CAM with the background x 0.05 (the best plain
prototype CAM of ``--grid proto``, so the calibration is measured against the strongest baseline),
``bg_mode`` "subtract", and the connectivity-split calibration of :mod:`cpmc_lib.calibration`
(``pairing="classifier"``, ``detached="fp"``, ``fp_radius=0``; ``--grid cpmc``), with the three
guards against false positives of ``--grid fpfn``: a strict prototype label for the regions
(``proto_bg_factor=1.75``), FN prototypes acting near their object (``fn_radius=1``) and the
attachment gate on the raw classifier CAM (``gate="attached_cam"``). ``--grid final`` prints the
defaults' row and the ablation of ``papermill_runs/ablation.yaml``; nothing here quotes their numbers.

Shapes: ``B`` images, ``K`` classes with background at index 0, ``h, w`` the CAM grid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .calibration import area_cells, mutual_calibration
from .prototypes import cluster_prototypes, prototype_seeds, prototype_set_cam, structure_aware_seeds
from .refinement import classifier_cam, context_features, max_normalize, pixel_affinity, refine_with_context

if TYPE_CHECKING:
    from .config import CalibrationConfig, PrototypeConfig, RefinementConfig

__all__ = ["BG_MODES", "cpmc_maps", "foreground_maps"]

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


def cpmc_maps(
    out: dict[str, Any],
    label: torch.Tensor,
    refinement: RefinementConfig,
    prototypes: PrototypeConfig,
    calibration: CalibrationConfig,
    img: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Every CPMC map of one batch of network outputs.

    Args:
        out: :meth:`~cpmc_lib.models.CamNet.forward`'s dict (``cam``, ``feat``, ``hie``, ``stages``).
        label: (B, K-1) multi-hot labels.
        refinement, prototypes, calibration: the three stage configs.
        img: (B, 3, H, W) images (the image context sources of ``refinement.source``).

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
    cam = classifier_cam(out["cam"].float(), label)  # step 1
    r = refinement
    ctx = context_features(r.source, out["feat"], out.get("stages", ()), out.get("hie"), img)
    refined = refine_with_context(cam, pixel_affinity(ctx.float(), r.power), r.iterations)  # step 3

    p = prototypes  # step 4
    feat = (out["hie"] if p.feature == "hie" else out["feat"]).float()
    if p.seed_rule == "iou":
        seeds = structure_aware_seeds(refined, ctx.float(), label, p.bg_factor)
    else:
        seeds = prototype_seeds(
            refined, label, p.seed_rule, p.bg_factor, p.fg_threshold, p.bg_threshold, p.fg_quantile, p.bg_quantile
        )
    # prototypes.min_size, like calibration.min_size, is an area of the grid_ref grid
    glob = cluster_prototypes(feat, seeds, p.clusters, area_cells(p.min_size, calibration, cam.shape[-2:]))
    proto = max_normalize(prototype_set_cam(feat, *glob))

    calibrated, fn, fp = mutual_calibration(feat, glob, cam, refined, proto, label, calibration)  # step 5
    return {"cam": cam, "refined": refined, "proto": proto, "cpmc": calibrated, "seeds": seeds, "fn": fn, "fp": fp}
