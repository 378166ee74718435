"""CPMC step 1-3: the classifier CAM and its context refinement by pixel-feature affinity.

The classifier CAM (IRN/SIPE) is the ReLU of the 1x1 head over the last stage, max-normalised per
class, with a background channel ``1 - max`` over the classes (SIPE). CPMC's "iterative
refinement based on context feature dependency" is reconstructed as SEAM/SFC's pixel correlation:

.. math:: A_{ij} = \\frac{\\mathrm{ReLU}(\\cos(f_i, f_j))^\\beta}{\\sum_{j'} \\mathrm{ReLU}(\\cos(f_i, f_{j'}))^\\beta},
          \\qquad R^{(t+1)}_k(i) = \\sum_j A_{ij} R^{(t)}_k(j)

Each pixel's new value is a convex combination of the values of pixels whose context features
resemble its own (the rows of ``A`` sum to one; SFC writes the same matrix transposed, with
columns summing to one). Absent classes stay exactly zero and a constant map is a fixed point.

The context features (:func:`context_features`) should come from another feature space than the
prototypes (the hierarchical ``hie``): the probes found that an affinity over the prototype's own
features only spreads the CAM over what a prototype already reaches, so the false-negative rule
of :mod:`cpmc_lib.calibration` never gets anything to do.

Shapes: ``B`` images, ``K`` classes with background at index 0, ``C`` feature channels,
``h, w`` the CAM grid, ``N = h * w``.

Example:
    >>> cam = classifier_cam(torch.rand(1, 2, 4, 4), torch.tensor([[1.0, 0.0]]))
    >>> aff = pixel_affinity(torch.randn(1, 8, 4, 4), power=2.0)
    >>> refine_with_context(cam, aff, iterations=2).shape
    torch.Size([1, 3, 4, 4])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "CONTEXT_SOURCES",
    "add_background",
    "classifier_cam",
    "context_features",
    "label_mask",
    "max_normalize",
    "pixel_affinity",
    "refine_with_context",
]

EPS = 1e-5
CONTEXT_SOURCES = ("stages", "feat", "hie", "image+feat", "image+stages")


def max_normalize(x: torch.Tensor) -> torch.Tensor:
    """Divide each map by its spatial maximum (SIPE's ``x / (max + 1e-5)``).

    Args:
        x: (B, K, h, w) non-negative maps.

    Returns:
        (B, K, h, w) with each channel's maximum just below 1 (all-zero channels stay 0).
    """
    return x / (x.flatten(2).amax(-1)[..., None, None] + EPS)


def label_mask(label: torch.Tensor) -> torch.Tensor:
    """Image labels padded with an always-present background: (B, K-1) -> (B, K) in {0, 1}."""
    return torch.cat([label.new_ones(label.shape[0], 1), label], dim=1)


def add_background(fg: torch.Tensor) -> torch.Tensor:
    """Prepend SIPE's background channel ``1 - max_c fg_c``.

    Args:
        fg: (B, K-1, h, w) max-normalised class maps (absent classes already 0).

    Returns:
        (B, K, h, w), background at index 0.
    """
    top = fg.amax(1, keepdim=True) if fg.shape[1] else fg.new_zeros(fg.shape[0], 1, *fg.shape[2:])
    return torch.cat([1 - top, fg], dim=1)


def classifier_cam(cam: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Step 1: the normalised classifier CAM with a background channel (SIPE).

    Args:
        cam: (B, K-1, h, w) raw class projection ``W^T feat`` (``CamNet.forward(x)["cam"]``).
        label: (B, K-1) multi-hot image labels; absent classes are zeroed.

    Returns:
        (B, K, h, w): ``[1 - max_c M_c, M_1, ..., M_{K-1}]`` with
        ``M_c = ReLU(cam_c) / max ReLU(cam_c)`` for present classes, 0 for absent ones.
    """
    fg = max_normalize(F.relu(cam)) * label[..., None, None]
    return add_background(fg)


def _unit(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise over channels: (B, C, h, w) -> (B, C, h, w)."""
    return x / (x.norm(dim=1, keepdim=True) + EPS)


def context_features(
    source: str,
    feat: torch.Tensor,
    stages: Sequence[torch.Tensor] = (),
    hie: torch.Tensor | None = None,
    img: torch.Tensor | None = None,
) -> torch.Tensor:
    """The features whose affinity refines the CAM.

    Args:
        source: ``"stages"`` (every stage L2-normalised, resized to the CAM grid, concatenated;
            the probes' best untrained choice), ``"feat"`` (last stage), ``"hie"`` (the
            prototype features themselves), ``"image+feat"`` / ``"image+stages"`` (the
            downsampled image, unit-normalised, joined to them).
        feat: (B, C, h, w) last stage.
        stages: stage outputs, each (B, C_s, H_s, W_s) (``"stages"`` sources).
        hie: (B, D, h, w) hierarchical feature (``"hie"``).
        img: (B, 3, H, W) normalised image (image sources).

    Returns:
        (B, C', h, w) features (not normalised; :func:`pixel_affinity` takes the cosine).
    """
    size = feat.shape[-2:]

    def resized(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == size:
            return x
        # Area-average larger maps (a bilinear 4x downsampling would skip most texture pixels).
        mode = "area" if x.shape[-1] > size[-1] else "bilinear"
        return F.interpolate(x, size=size, mode=mode, **({} if mode == "area" else {"align_corners": False}))

    if source == "feat":
        return feat
    if source == "hie":
        if hie is None:
            raise ValueError("context source 'hie' needs the hierarchical feature")
        return hie
    parts: list[torch.Tensor] = []
    if source.startswith("image+"):
        if img is None:
            raise ValueError(f"context source {source!r} needs the image")
        parts.append(_unit(resized(img)))
        source = source[len("image+") :]
    if source == "feat":
        parts.append(_unit(feat))
    elif source == "stages":
        if not stages:
            raise ValueError("context source 'stages' needs the stage outputs")
        # Normalise before joining so that each stage weighs the same in the cosine.
        parts += [resized(_unit(s)) for s in stages]
    else:
        raise ValueError(f"unknown context source {source!r}; sources: {', '.join(CONTEXT_SOURCES)}")
    return torch.cat(parts, dim=1)


def pixel_affinity(feat: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """Row-normalised pixel affinity ``A = ReLU(cos(f_i, f_j))^power / row sum``.

    Args:
        feat: (B, C, h, w) context features.
        power: exponent beta; larger values keep only the most similar pixels.

    Returns:
        (B, N, N), ``N = h * w``; ``A[b, i, j]`` is pixel j's weight in pixel i's refined value,
        each row sums to one.
    """
    f = _unit(feat).flatten(2)  # (B, C, N)
    s = F.relu(torch.einsum("bci,bcj->bij", f, f))
    if power != 1.0:
        s = s.pow(power)
    return s / (s.sum(-1, keepdim=True) + EPS)


def refine_with_context(cam: torch.Tensor, affinity: torch.Tensor, iterations: int = 2) -> torch.Tensor:
    """Step 3: propagate the CAM ``iterations`` times along the affinity, ``R <- A R`` (SFC: twice).

    Args:
        cam: (B, K, h, w) normalised CAM with background (:func:`classifier_cam`).
        affinity: (B, N, N) row-normalised affinity (:func:`pixel_affinity`).
        iterations: T, number of propagation steps (0 returns ``cam``).

    Returns:
        (B, K, h, w) refined CAM: every value a convex combination of the same channel's values,
        so absent classes stay 0 and values stay in [0, 1]; not re-normalised.
    """
    b, k, h, w = cam.shape
    r = cam.flatten(2)  # (B, K, N)
    for _ in range(iterations):
        r = torch.einsum("bij,bkj->bki", affinity, r)
    return r.view(b, k, h, w)
