"""Negative prototypes: what a class's classifier fires on in images labelled without it.

An image whose label lacks class ``c`` holds no pixel of ``c``. Every cell where ``c``'s classifier
CAM fires there is therefore a false positive of ``c``, known from the image labels alone: context
that often comes with ``c``, bodies that look like its own. Clustered, their features are ``c``'s
*negative prototypes* (in the spirit of W-OoD, Lee et al., CVPR 2022, which learns from images
without the class). A pseudo-label pixel of ``c`` whose feature is nearer ``c``'s negative
prototypes than ``c``'s own confident cells of the same image is set to ignore (255): the
segmentation network learns ``c`` neither there nor against it.

A class gets negative prototypes only where its raw classifier CAM, on images without it, reaches
``share`` x its mean peak on images with it; a classifier that stays quiet on such images leaves
its class's labels untouched. And only a class that fires there far more often than the typical
class (:func:`firing_outliers`): the method is for a classifier that leans on a cue outside its
objects, such as context. Where most classes fire on images without them, the classifier confuses
look-alike classes, their negative cells are bodies like their own, and ignoring what resembles
them would take each class's own body away. Nothing here reads ground truth.

Shapes: ``cam`` (B, K-1, h, w) raw class projection (:meth:`cpmc_lib.models.CamNet.forward`),
``feat`` (B, D, h, w) prototype features, ``label`` (B, K-1) multi-hot; class ``c`` of the
pseudo labels is channel ``c - 1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .config import Config
from .datasets import build_dataset, collate
from .io import IGNORE_INDEX
from .models import CamNet, load_classifier
from .progress import tqdm
from .prototypes import _kmeans
from .refinement import EPS
from .runtime import pick_device
from .transforms import eval_transform

if TYPE_CHECKING:
    from .store import RunStore

__all__ = [
    "NegativeBank", "build_bank", "firing_outliers", "ignore_negatives", "negative_cells", "negative_mask",
    "negative_prototypes",
]  # fmt: skip


def negative_cells(
    cam: torch.Tensor, feat: torch.Tensor, label: torch.Tensor, peak: torch.Tensor, share: float
) -> list[torch.Tensor]:
    """Per class ``c``: the unit features of the cells of images without ``c`` where ``ReLU(cam_c) >= share * peak_c``.

    Args:
        cam: (B, K-1, h, w) raw CAMs; feat: (B, D, h, w); label: (B, K-1) multi-hot.
        peak: (K-1,) each class's mean CAM peak over images with it.

    Returns:
        K-1 tensors (n_c, D), possibly empty.
    """
    unit = F.normalize(feat.float(), dim=1, eps=EPS).permute(0, 2, 3, 1)  # (B, h, w, D)
    out = []
    for c in range(cam.shape[1]):
        neg = ~label[:, c].bool()
        hot = F.relu(cam[neg, c].float()) >= share * peak[c]  # (n, h, w)
        out.append(unit[neg][hot])
    return out


def firing_outliers(rate: torch.Tensor, factor: float) -> torch.Tensor:
    """Which classes fire on images without them far more often than the typical class.

    Args:
        rate: (K-1,) per class, the share of images without it where its CAM reaches the
            negative share of its peak somewhere.
        factor: ``pseudo.negative_outlier``; a class qualifies where ``rate >= factor x`` the
            median rate over the classes (and ``rate > 0``). 0 lets every firing class qualify.

    Returns:
        (K-1,) bool.

    Example:
        >>> firing_outliers(torch.tensor([0.0, 0.0, 0.3, 0.01]), 3.0).tolist()
        [False, False, True, True]
        >>> firing_outliers(torch.tensor([0.2, 0.3, 0.25, 0.1]), 3.0).tolist()  # most classes fire
        [False, False, False, False]
    """
    rate = rate.float()
    return (rate > 0) & (rate >= factor * rate.median())


def negative_prototypes(cells: torch.Tensor, clusters: int) -> torch.Tensor | None:
    """Spherical k-means centres (M, D) of one class's negative cells (n, D); None when n < clusters."""
    if len(cells) < max(clusters, 1):
        return None
    assign = _kmeans(F.normalize(cells.float(), dim=1, eps=EPS), clusters)
    centres = torch.zeros(clusters, cells.shape[1]).index_add_(0, assign, cells.float())
    return F.normalize(centres[torch.bincount(assign, minlength=clusters) > 0], dim=1, eps=EPS)


def negative_mask(
    cam: torch.Tensor, feat: torch.Tensor, keys: list[int], bank: list[torch.Tensor | None], part_share: float
) -> torch.Tensor:
    """One image: the cells where each present class looks more like its negatives than like itself.

    Class ``c``'s own look is the mean unit feature of its confident cells (``ReLU(cam_c) >=
    part_share`` x its peak in this image). A cell is marked where ``max_m cos(f, n_c^m) > cos(f, own_c)``.

    Args:
        cam: (K-1, h, w) raw CAMs; feat: (D, h, w).
        keys: the image's classes (1..K-1).
        bank: :func:`build_bank`'s prototypes per class channel (None: no negatives).

    Returns:
        (len(keys), h, w) bool.
    """
    unit = F.normalize(feat.float(), dim=0, eps=EPS)
    out = torch.zeros(len(keys), *cam.shape[-2:], dtype=torch.bool)
    for i, c in enumerate(keys):
        neg = bank[c - 1]
        act = F.relu(cam[c - 1].float())
        if neg is None or act.max() <= 0:
            continue
        own = F.normalize(unit[:, act >= part_share * act.max()].mean(1), dim=0, eps=EPS)
        out[i] = torch.einsum("dhw,md->mhw", unit, neg).amax(0) > torch.einsum("dhw,d->hw", unit, own)
    return out


def ignore_negatives(label: np.ndarray, keys: list[int], mask: torch.Tensor) -> np.ndarray:
    """``label`` (H, W) with each class ``keys[i]`` set to 255 on ``mask[i]`` (k, h, w), upsampled (nearest)."""
    if not mask.any():
        return label
    up = F.interpolate(mask[None].float(), size=label.shape, mode="nearest")[0].bool().numpy()
    out = label.copy()
    for i, c in enumerate(keys):
        out[(label == c) & up[i]] = IGNORE_INDEX
    return out


@dataclass
class NegativeBank:
    """The negative prototypes of a run and the masks of its seg-split images."""

    prototypes: list[torch.Tensor | None]  # per class channel: (M, D) or None
    masks: dict[str, tuple[list[int], torch.Tensor]]  # image name -> (keys, (k, h, w) bool)
    rates: list[float]  # per class channel: share of images without it where it fires (firing_outliers)

    def summary(self, class_names: list[str]) -> dict[str, int]:
        """Class name -> number of negative prototypes, for the classes that have any."""
        return {class_names[c + 1]: len(p) for c, p in enumerate(self.prototypes) if p is not None}

    def firing(self, class_names: list[str]) -> dict[str, float]:
        """Class name -> % of the images without it where it fires, for the classes that fire at all."""
        return {class_names[c + 1]: round(100 * r, 2) for c, r in enumerate(self.rates) if r > 0}


def _outputs(model: CamNet, cfg: Config, split: str, device: torch.device, desc: str, progress: bool
             ) -> Iterator[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]:  # fmt: skip
    """(name, cam (K-1, h, w), feat (D, h, w), label (K-1,)) per image of ``split``, on the CPU."""
    ds = build_dataset(cfg, split, eval_transform())
    loader = DataLoader(ds, batch_size=cfg.cams.batch_size, collate_fn=collate)
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, disable=not progress):
            imgs = batch["img"]
            stacks = [x[None] for x in imgs] if isinstance(imgs, list) else [imgs]  # sizes differ: one at a time
            outs = [model(x.to(device)) for x in stacks]
            cams = [c for o in outs for c in o["cam"].float().cpu()]
            feats = [f for o in outs for f in o[cfg.prototypes.feature].float().cpu()]
            yield from zip(batch["name"], cams, feats, batch["label"], strict=True)


def build_bank(cfg: Config, store: RunStore, progress: bool = True) -> NegativeBank:
    """Negative prototypes from the cam split (``pseudo.negative_share``, ``negative_clusters``, for
    the classes :func:`firing_outliers` picks with ``negative_outlier``) and the masks of every
    seg-split image. Three passes of the trained classifier: class peaks, negative cells, masks."""
    p = cfg.pseudo
    store.require("classifier", cfg, "trained classifier")
    device = pick_device(cfg.device)
    model = load_classifier(store.path("classifier") / "model.pt", cfg).to(device).eval()
    k = cfg.data.num_classes - 1
    peak_sum, peak_n = torch.zeros(k), torch.zeros(k)
    for _, cam, _, label in _outputs(model, cfg, cfg.data.cam_split, device, "negatives: peaks", progress):
        on = label.bool()
        peak_sum[on] += F.relu(cam[on]).flatten(1).amax(1)
        peak_n[on] += 1
    peak = peak_sum / peak_n.clamp_min(1)
    cells: list[list[torch.Tensor]] = [[] for _ in range(k)]
    negative_images = torch.zeros(k)
    for _, cam, feat, label in _outputs(model, cfg, cfg.data.cam_split, device, "negatives: cells", progress):
        negative_images += 1 - label.float()
        for c, found in enumerate(negative_cells(cam[None], feat[None], label[None], peak, p.negative_share)):
            if len(found):
                cells[c].append(found)
    rate = torch.tensor([float(len(found)) for found in cells]) / negative_images.clamp_min(1)
    chosen = firing_outliers(rate, p.negative_outlier)
    prototypes = [
        negative_prototypes(torch.cat(found), p.negative_clusters) if found and chosen[c] else None
        for c, found in enumerate(cells)
    ]
    masks = {}
    for name, cam, feat, label in _outputs(model, cfg, cfg.seg_split(), device, "negatives: masks", progress):
        keys = (label.nonzero().flatten() + 1).tolist()
        masks[name] = (keys, negative_mask(cam, feat, keys, prototypes, p.part_share))
    return NegativeBank(prototypes, masks, rate.tolist())

