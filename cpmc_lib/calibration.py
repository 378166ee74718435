"""CPMC step 5: mutual calibration with false-negative and false-positive local prototypes.

The prototype CAM is the map being calibrated and the refined classifier CAM its reference
(``pairing="proto"``, the default). With ``L_M`` the reference's labels and ``L_P`` the prototype
CAM's labels (arg-max over background and the image's classes):

- **false negatives** of class ``c``: ``L_M = c`` and ``L_P != c`` - object parts the classifier
  (through context refinement) covers but the global prototype misses;
- **false positives** of class ``c``: ``L_P = c`` and ``L_M = 0`` - background the prototype CAM
  fires on while the classifier calls it background.

A *local prototype* is the masked average of the hierarchical feature over such a region
(optionally one per k-means cluster, :func:`~cpmc_lib.prototypes.cluster_prototypes`). FN
local prototypes join class ``c``'s prototype set, FP local prototypes join the background's, and
the calibrated CAM takes, per class, the highest cosine activation over its set
(:func:`calibrated_cam`). ``pairing="classifier"`` swaps the roles: the classifier's errors
measured against the prototype CAM.

Shapes: ``B`` images, ``K`` classes with background at index 0, ``C`` feature channels,
``M`` prototypes per class, ``h, w`` the CAM grid.

Example:
    >>> ref = torch.tensor([[[0, 1, 1, 0]]]); proto = torch.tensor([[[0, 0, 1, 1]]])
    >>> false_negative_regions(ref, proto, 2)[0, 1].tolist(), false_positive_regions(ref, proto, 2)[0, 1].tolist()
    ([[False, True, False, False]], [[False, False, False, True]])
"""

from __future__ import annotations

import torch

from .prototypes import cluster_prototypes, one_hot_labels, prototype_set_cam
from .refinement import max_normalize

__all__ = [
    "calibrated_cam",
    "false_negative_regions",
    "false_positive_regions",
    "local_prototypes",
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
) -> torch.Tensor:
    """Final CPMC map: per class the max activation over its global and FN local prototypes,
    for background over its global and all FP local prototypes; max-normalised.

    Args:
        feat: (B, C, h, w) hierarchical features.
        proto: global prototype sets ``(B, K, M, C)``, ``(B, K, M)`` valid.
        fn: FN local prototypes ``(B, K, M', C)``, ``(B, K, M')``; joined to their class.
        fp: FP local prototypes ``(B, K, M'', C)``, ``(B, K, M'')``; all joined to background.

    Returns:
        (B, K, h, w) max-normalised calibrated CAM; absent classes stay 0.
    """
    cam = prototype_set_cam(feat, *proto)
    if fn is not None:
        cam = torch.maximum(cam, prototype_set_cam(feat, *fn))  # FN sets of background are empty
    if fp is not None:
        # Every FP prototype describes background, whichever class it was taken from.
        p, v = fp
        b, k, m, c = p.shape
        bg = prototype_set_cam(feat, p.reshape(b, 1, k * m, c), v.reshape(b, 1, k * m))
        cam = torch.cat([torch.maximum(cam[:, :1], bg), cam[:, 1:]], dim=1)
    return max_normalize(cam)
