"""CPMC step 4: image-specific prototypes and the prototype CAM (SIPE's IS-CAM, seeded as in SFC).

Seeds are taken from the *refined* classifier CAM and restricted to the image's classes; a
prototype is the masked average of the hierarchical feature under a seed and the prototype CAM is
the cosine activation of every pixel against it:

.. math:: p_k = \\frac{\\sum_i E_k(i) F_i}{\\sum_i E_k(i)}, \\qquad P_k(i) = \\mathrm{ReLU}(\\cos(F_i, p_k))

Seed rules (:func:`prototype_seeds`): ``"argmax"`` (SFC: arg-max with the background channel
scaled by ``bg_factor``), ``"threshold"`` (fixed cut-offs on the re-normalised refined CAM),
``"quantile"`` (per-image rules: the top ``fg_quantile`` of each class's arg-max area and the
image's lowest ``bg_quantile`` of the foreground maximum as background) and
:func:`structure_aware_seeds` (SIPE's soft-IoU seeds). The probes found seed tightness decides
everything downstream, and per-image rules transfer across datasets where fixed thresholds do not.

Several prototypes per class (:func:`cluster_prototypes`, spherical k-means inside a region) serve
both the global prototypes (option) and CPMC's local prototypes (:mod:`cpmc_lib.calibration`).

Shapes: ``B`` images, ``K`` classes with background at index 0, ``C`` feature channels,
``M`` prototypes per class, ``h, w`` the CAM grid.

Example:
    >>> feat = torch.randn(1, 8, 4, 4)
    >>> seeds = torch.zeros(1, 3, 4, 4, dtype=torch.bool); seeds[0, 0, :2] = True; seeds[0, 1, 2:] = True
    >>> prototype_cam(feat, seeds).shape
    torch.Size([1, 3, 4, 4])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .refinement import EPS, label_mask, max_normalize

__all__ = [
    "SEED_RULES",
    "cluster_prototypes",
    "cosine_activation",
    "masked_average",
    "one_hot_labels",
    "prototype_cam",
    "prototype_set_cam",
    "prototype_seeds",
    "seed_labels",
    "structure_aware_seeds",
]

SEED_RULES = ("argmax", "threshold", "quantile", "iou")


def seed_labels(cam: torch.Tensor, bg_factor: float) -> torch.Tensor:
    """Arg-max labels with the background channel scaled by ``bg_factor`` (SFC: 0.3).

    Args:
        cam: (B, K, h, w) CAM with background at 0 (absent classes 0).

    Returns:
        (B, h, w) int64 labels in 0..K-1; ties go to the lower index (background first).
    """
    scaled = torch.cat([cam[:, :1] * bg_factor, cam[:, 1:]], dim=1)
    return scaled.argmax(1)


def one_hot_labels(labels: torch.Tensor, k: int) -> torch.Tensor:
    """(B, h, w) int labels -> (B, K, h, w) bool."""
    return F.one_hot(labels, k).permute(0, 3, 1, 2).bool()


def prototype_seeds(
    cam: torch.Tensor,
    label: torch.Tensor,
    rule: str = "argmax",
    bg_factor: float = 0.3,
    fg_threshold: float = 0.8,
    bg_threshold: float = 0.2,
    fg_quantile: float = 0.5,
    bg_quantile: float = 0.3,
) -> torch.Tensor:
    """Seed masks of the global prototypes, from the (refined) classifier CAM.

    Args:
        cam: (B, K, h, w) refined CAM with background (:func:`~cpmc_lib.refinement.refine_with_context`).
        label: (B, K-1) multi-hot image labels.
        rule: ``"argmax"`` - one-hot arg-max with the background scaled by ``bg_factor``;
            ``"threshold"`` - a class's seed is its arg-max pixels whose re-normalised value
            reaches ``fg_threshold``, background where the highest class value is at most
            ``bg_threshold``; ``"quantile"`` - per image: the top ``fg_quantile`` fraction (by
            value) of each class's arg-max area, background the pixels whose highest class
            value lies in the image's lowest ``bg_quantile`` fraction.
        bg_factor: background scale of the arg-max (all rules use it to assign class areas).

    Returns:
        (B, K, h, w) bool seeds, absent classes empty; a pixel seeds at most one class.
    """
    b, k, h, w = cam.shape
    present = label_mask(label).bool()[..., None, None]  # (B, K, 1, 1)
    area = one_hot_labels(seed_labels(cam, bg_factor), k) & present
    if rule == "argmax":
        return area
    # Re-normalise: refinement shrinks the maxima and the rules compare values across images.
    fg = max_normalize(cam[:, 1:])
    top = fg.amax(1) if k > 1 else cam.new_zeros(b, h, w)  # (B, h, w)
    if rule == "threshold":
        seeds_fg = area[:, 1:] & (fg >= fg_threshold)
        seeds_bg = top <= bg_threshold
    elif rule == "quantile":
        vals = torch.where(area[:, 1:], fg, torch.nan).flatten(2)  # (B, K-1, N)
        cut = torch.nanquantile(vals, 1 - fg_quantile, dim=-1)  # NaN for an empty area
        seeds_fg = area[:, 1:] & (fg >= cut.nan_to_num(2.0)[..., None, None])
        bg_cut = torch.quantile(top.flatten(1), bg_quantile, dim=-1)  # (B,)
        seeds_bg = top <= bg_cut[:, None, None]
    else:
        raise ValueError(
            f"unknown seed rule {rule!r}; rules: {', '.join(SEED_RULES)} (iou: structure_aware_seeds)"
        )
    return torch.cat([seeds_bg[:, None], seeds_fg], dim=1) & present


def structure_aware_seeds(
    cam: torch.Tensor, feat: torch.Tensor, label: torch.Tensor, bg_factor: float = 0.5
) -> torch.Tensor:
    """SIPE's structure-aware seeds: arg-max over classes of a soft IoU between correlation and CAM.

    ``IoU_k(i) = inter / (sum_j S_ij + sum_j M_k(j) - inter)`` with ``inter = sum_j S_ij M_k(j)``
    and ``S = ReLU(cos(f_i, f_j))``; the background IoU is scaled by ``bg_factor`` (SIPE: 0.5).

    Args:
        cam: (B, K, h, w) CAM with background.
        feat: (B, C, h, w) features of the correlation.
        label: (B, K-1) multi-hot labels.

    Returns:
        (B, K, h, w) bool seeds, absent classes empty.
    """
    b, k, h, w = cam.shape
    f = F.normalize(feat.flatten(2), dim=1, eps=EPS)  # (B, C, N)
    s = F.relu(torch.einsum("bci,bcj->bij", f, f))  # (B, N, N)
    m = cam.flatten(2)  # (B, K, N)
    inter = torch.einsum("bij,bkj->bki", s, m)
    union = s.sum(-1)[:, None] + m.sum(-1, keepdim=True) - inter
    iou = inter / (union + EPS)
    iou[:, 0] *= bg_factor
    present = label_mask(label).bool()
    iou = iou.masked_fill(~present[..., None], -1.0)
    return one_hot_labels(iou.argmax(1).view(b, h, w), k) & present[..., None, None]


def masked_average(feat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean feature under each mask (the prototype).

    Args:
        feat: (B, C, h, w) features.
        mask: (B, P, h, w) bool or non-negative weights.

    Returns:
        (B, P, C); a zero vector for an empty mask (its cosine activation is then 0).
    """
    m = mask.to(feat.dtype).flatten(2)  # (B, P, N)
    total = torch.einsum("bpn,bcn->bpc", m, feat.flatten(2))
    return total / m.sum(-1, keepdim=True).clamp(min=1)


def cosine_activation(feat: torch.Tensor, proto: torch.Tensor) -> torch.Tensor:
    """``ReLU(cos(F_i, p))`` of every pixel against every prototype.

    Args:
        feat: (B, C, h, w) features.
        proto: (B, P, C) prototypes (zero vectors give 0).

    Returns:
        (B, P, h, w) in [0, 1].
    """
    f = F.normalize(feat, dim=1, eps=EPS)
    p = F.normalize(proto, dim=-1, eps=EPS)
    return F.relu(torch.einsum("bpc,bchw->bphw", p, f))


def prototype_cam(feat: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Step 4: the prototype CAM, ``P_k = ReLU(cos(F, mean of F under seed_k))``.

    Args:
        feat: (B, C, h, w) hierarchical features.
        seeds: (B, K, h, w) seed masks (:func:`prototype_seeds`), background included.

    Returns:
        (B, K, h, w); 0 for classes with an empty seed (absent classes).
    """
    return cosine_activation(feat, masked_average(feat, seeds))


def _kmeans(x: torch.Tensor, m: int, iters: int = 10) -> torch.Tensor:
    """Spherical k-means of unit rows ``x`` (n, C) into ``m`` clusters: (n,) assignments.

    Deterministic: the first centre is the point closest to the mean, each next one the point
    farthest from the centres so far.
    """
    mean = F.normalize(x.mean(0), dim=0, eps=EPS)
    idx = [int((x @ mean).argmax())]
    for _ in range(1, m):
        sim = (x @ x[idx].T).amax(1)
        idx.append(int(sim.argmin()))
    centres = x[idx]
    assign = (x @ centres.T).argmax(1)
    for _ in range(iters):
        centres = F.normalize(torch.zeros_like(centres).index_add_(0, assign, x), dim=1, eps=EPS)
        new = (x @ centres.T).argmax(1)
        if torch.equal(new, assign):
            break
        assign = new
    return assign


def cluster_prototypes(
    feat: torch.Tensor, mask: torch.Tensor, max_clusters: int = 1, min_size: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``max_clusters`` prototypes per mask: masked averages of its k-means clusters.

    A mask with fewer than ``min_size`` pixels gives no prototype; a mask of ``n`` pixels is split
    into ``min(max_clusters, n // min_size)`` clusters (spherical k-means on the features).

    Args:
        feat: (B, C, h, w) features.
        mask: (B, P, h, w) bool region masks.
        max_clusters: M.
        min_size: the smallest region (and cluster budget unit) in grid cells.

    Returns:
        ``(proto, valid)``: (B, P, M, C) prototypes and (B, P, M) bool, True where a prototype exists.
    """
    b, p, h, w = mask.shape
    c = feat.shape[1]
    proto = feat.new_zeros(b, p, max_clusters, c)
    valid = torch.zeros(b, p, max_clusters, dtype=torch.bool, device=feat.device)
    counts = mask.flatten(2).sum(-1)  # (B, P)
    if max_clusters == 1:  # no clustering: one masked average per region
        proto[:, :, 0] = masked_average(feat, mask)
        valid[:, :, 0] = counts >= max(min_size, 1)
        return proto, valid
    f = feat.flatten(2).transpose(1, 2)  # (B, N, C)
    for bi, pi in (counts >= max(min_size, 1)).nonzero().tolist():
        x = f[bi][mask[bi, pi].flatten()]
        m = max(1, min(max_clusters, int(counts[bi, pi]) // max(min_size, 1)))
        assign = (
            _kmeans(F.normalize(x, dim=1, eps=EPS), m) if m > 1 else torch.zeros(len(x), dtype=torch.long)
        )
        sums = x.new_zeros(m, c).index_add_(0, assign, x)
        n = torch.bincount(assign, minlength=m)
        proto[bi, pi, :m] = sums / n.clamp(min=1)[:, None].to(x.dtype)
        valid[bi, pi, :m] = n > 0
    return proto, valid


def prototype_set_cam(feat: torch.Tensor, proto: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per class, the highest cosine activation over its set of prototypes.

    Args:
        feat: (B, C, h, w) features.
        proto: (B, K, M, C) prototype sets.
        valid: (B, K, M) bool, which prototypes exist.

    Returns:
        (B, K, h, w); 0 for a class without prototypes.
    """
    b, k, m, c = proto.shape
    act = cosine_activation(feat, proto.reshape(b, k * m, c)).view(b, k, m, *feat.shape[-2:])
    return (act * valid[..., None, None]).amax(2)
