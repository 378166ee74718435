"""Stage "affinity": a learned pixel affinity and its random walk over the maps (AffinityNet / IRN).

SIPE and SFC do not stop at their seeds: on VOC their pseudo masks come from IRN's random walk,
which spreads each seed map over the pixels a *learned* affinity ties to it. This stage is that
step, in the simpler form of AffinityNet (PSA, Ahn & Kwak, CVPR 2018), which IRN grew from:

1. **Seeds** (IRN's ``cam_to_ir_label``): the pseudo-label method's maps give confident object
   pixels (top map > ``fg_threshold``, labelled with the arg-max class), confident background
   (top map <= ``bg_threshold``) and ignore (255) in between; saved as PNGs, like IRN's ir labels.
2. **Affinity** (:func:`pairwise_affinity`): a small head on the frozen classifier's stages embeds
   every cell of a grid of stride ``stride`` (4); two cells within ``radius`` have affinity
   :math:`a_{ij} = \\exp(-\\lVert f_i - f_j \\rVert_1 / D)`. Trained with AffinityNet's loss
   (:func:`affinity_loss`): pairs of the same seed label pulled towards 1 (background pairs and
   object pairs weighted apart), pairs of different labels pushed towards 0; ignore pixels give
   no pairs. No ground truth is read.
3. **Random walk** (:func:`random_walk`): each step replaces a cell's maps by the average of its
   neighbours' weighted by :math:`a_{ij}^\\beta` (PSA's transition matrix, :math:`T = D^{-1}A^\\beta`).
   Where the affinity stays high across a part of the object the map missed, the map flows in;
   a class boundary (low affinity) stops it. The walked maps are max-normalised per class and
   saved in the cams format, so the pseudo labels and their scores read them unchanged.

Deviations, said plainly: PSA walks the background channel too and takes the arg-max; here the
class maps walk and the pseudo labels keep their own background rule (``pseudo.threshold_rule``),
so the walk changes the maps only. IRN predicts class boundaries and displacements instead of
PSA's embedding; PSA's affinity grid has stride 8, IRN's and this one stride 4.

Shapes: ``B`` images, ``D`` embedding channels, ``h, w`` the affinity grid, ``P`` neighbour
offsets (:func:`neighbour_offsets`), ``C`` maps.

Outputs in ``runs/<run>/affinity/``: ``seeds/<name>.png``, ``model.pt`` (the head),
``maps/<name>.npy`` (``{"keys", "cam"}`` as :func:`cpmc_lib.cams.load_cams` reads them, for every
image of the cam and seg splits) and the manifest, whose result holds the walked maps' scores
(:func:`cpmc_lib.cams.evaluate_cams`: best-threshold mIoU, an oracle view, and pathology).

Example:
    >>> offsets = neighbour_offsets(2)
    >>> aff = pairwise_affinity(torch.zeros(1, 4, 3, 3), offsets)
    >>> random_walk(torch.ones(1, 1, 3, 3), aff, offsets, beta=8.0, steps=2).flatten().tolist()[:3]
    [1.0, 1.0, 1.0]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from . import distributed
from .cams import cached_metrics, evaluate_cams, seg_maps_done
from .config import Config
from .datasets import build_dataset, collate
from .engine import fit, poly_lr
from .io import IGNORE_INDEX, atomic_write, save_json, save_mask_png, save_torch
from .models import CamNet, load_classifier
from .progress import tqdm
from .pseudo import pseudo_label
from .runtime import channels_last, loader_options, pick_device, seed_everything, to_device, worker_init_fn
from .segmentation import MaskFolderDataset
from .store import RunStore, StageMissingError, missing_stage_message
from .transforms import eval_transform, train_transform

__all__ = [
    "AffinityHead",
    "affinity_loss",
    "affinity_targets",
    "frozen_backbone",
    "grid_size",
    "load_head",
    "maps_dir",
    "neighbour_offsets",
    "pairwise_affinity",
    "random_walk",
    "run",
    "walk_folder",
    "walk_maps",
]

EPS = 1e-5
Offsets = Sequence[tuple[int, int]]


def neighbour_offsets(radius: int, center: bool = True, half: bool = False) -> list[tuple[int, int]]:
    """The (dy, dx) of every cell within ``radius`` of a cell (``dy^2 + dx^2 < radius^2``, PSA).

    Args:
        center: include (0, 0).
        half: one offset of each pair ``(dy, dx)``, ``(-dy, -dx)`` (those after (0, 0) in raster
            order), as PSA trains: the affinity is symmetric, so every unordered pair of cells is
            met once, the loss (a mean per group) is unchanged, and it costs half.

    Example:
        >>> neighbour_offsets(2)
        [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1), (1, -1), (1, 0), (1, 1)]
        >>> len(neighbour_offsets(5, center=False)), len(neighbour_offsets(5, center=False, half=True))
        (68, 34)
    """
    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    r = radius - 1
    return [
        (dy, dx)
        for dy in range(-r, r + 1)
        for dx in range(-r, r + 1)
        if dy * dy + dx * dx < radius * radius
        and (center or (dy, dx) != (0, 0))
        and (not half or (dy, dx) > (0, 0) or (dy, dx) == (0, 0))
    ]


def _neighbours(x: torch.Tensor, offsets: Offsets, fill: float) -> torch.Tensor:
    """Every cell's neighbours: (B, C, h, w) -> (B, P, C, h, w), ``fill`` outside the grid."""
    h, w = x.shape[-2:]
    r = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    pad = F.pad(x, (r, r, r, r), value=fill)
    return torch.stack([pad[..., r + dy : r + dy + h, r + dx : r + dx + w] for dy, dx in offsets], 1)


def pairwise_affinity(feat: torch.Tensor, offsets: Offsets) -> torch.Tensor:
    """AffinityNet's affinity of every cell with each neighbour: ``exp(-mean_d |f_i - f_j|)``.

    Args:
        feat: (B, D, h, w) embedding.
        offsets: P neighbour offsets (:func:`neighbour_offsets`).

    Returns:
        (B, P, h, w) in (0, 1]; 0 where the neighbour lies outside the grid.
    """
    feat = feat.float()  # also under CUDA autocast: the loss's log(1 + 1e-5 - a) is -inf in float16
    nb = _neighbours(feat, offsets, 0.0)  # (B, P, D, h, w)
    inside = _neighbours(feat.new_ones(feat.shape[0], 1, *feat.shape[-2:]), offsets, 0.0)[:, :, 0]
    return torch.exp(-(nb - feat[:, None]).abs().mean(2)) * inside


def affinity_targets(seed: torch.Tensor, offsets: Offsets) -> dict[str, torch.Tensor]:
    """AffinityNet's pair labels from a seed label map.

    Args:
        seed: (B, h, w) int64 class ids, 0 = background, ``IGNORE_INDEX`` = unsure.
        offsets: P neighbour offsets (without (0, 0): a cell paired with itself teaches nothing).

    Returns:
        dict of (B, P, h, w) bool: ``bg_pos`` (both background), ``fg_pos`` (both the same
        class), ``neg`` (different labels); pairs with an ignore cell or outside the grid are in none.
    """
    nb = _neighbours(seed[:, None], offsets, IGNORE_INDEX)[:, :, 0]  # (B, P, h, w)
    me = seed[:, None].expand_as(nb)
    both = (me != IGNORE_INDEX) & (nb != IGNORE_INDEX)
    same = both & (me == nb)
    return {"bg_pos": same & (me == 0), "fg_pos": same & (me > 0), "neg": both & (me != nb)}


def affinity_loss(aff: torch.Tensor, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AffinityNet's loss: ``bg/4 + fg/4 + neg/2`` of the per-group mean cross-entropies.

    Args:
        aff: (B, P, h, w) affinities (:func:`pairwise_affinity`).
        targets: :func:`affinity_targets` for the same offsets.

    Returns:
        dict with ``loss`` and its parts ``bg``, ``fg``, ``neg`` (a group without pairs adds 0).
    """

    def mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return (x * m).sum() / m.sum().clamp_min(1)

    bg = mean(-torch.log(aff + EPS), targets["bg_pos"])
    fg = mean(-torch.log(aff + EPS), targets["fg_pos"])
    neg = mean(-torch.log(1 + EPS - aff), targets["neg"])
    return {"loss": bg / 4 + fg / 4 + neg / 2, "bg": bg.detach(), "fg": fg.detach(), "neg": neg.detach()}


def random_walk(
    cams: torch.Tensor, aff: torch.Tensor, offsets: Offsets, beta: float, steps: int
) -> torch.Tensor:
    """Propagate maps along the affinity: ``steps`` applications of ``T = D^{-1} A^beta``.

    Args:
        cams: (B, C, h, w) maps on the affinity grid.
        aff: (B, P, h, w) affinities for ``offsets``, which must hold (0, 0) (each cell keeps some
            of its own value, PSA's diagonal).
        beta: sharpening power: high values let only strong affinities carry.
        steps: walk steps (PSA: 2^logt).

    Returns:
        (B, C, h, w); each cell a convex combination of its neighbours' values, so a constant
        map stays constant and an all-zero map stays zero.
    """
    if (0, 0) not in offsets:
        raise ValueError("random_walk needs the offset (0, 0) among the neighbours")
    weight = aff.pow(beta)
    weight = weight / weight.sum(1, keepdim=True).clamp_min(EPS)  # (B, P, h, w), sums to 1 over P
    for _ in range(steps):
        cams = (weight[:, :, None] * _neighbours(cams, offsets, 0.0)).sum(1)
    return cams


class AffinityHead(nn.Module):
    """AffinityNet's embedding over the frozen classifier's stages, on a grid of the caller's choice.

    Each stage: 1x1 conv to ``width`` channels, GroupNorm, ReLU, resized to the grid (area when
    finer, bilinear when coarser); the concatenation goes through a 1x1 conv to ``dim`` channels
    (PSA: three stages, 448 channels).

    Args:
        in_channels: channels of each classifier stage.
    """

    def __init__(self, in_channels: Sequence[int], width: int = 32, dim: int = 32) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.GroupNorm(4, width), nn.ReLU(inplace=True))
            for c in in_channels
        )
        self.embed = nn.Conv2d(width * len(in_channels), dim, 1, bias=False)

    def forward(self, stages: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """(B, C_s, h_s, w_s) per stage -> (B, dim, h, w) with ``(h, w) = size``."""
        maps = []
        for branch, x in zip(self.branches, stages, strict=True):
            y = branch(x)
            if y.shape[-2:] != tuple(size):
                finer = y.shape[-1] > size[-1]
                y = (
                    F.interpolate(y, size=size, mode="area")
                    if finer
                    else F.interpolate(y, size=size, mode="bilinear", align_corners=False)
                )
            maps.append(y)
        return self.embed(torch.cat(maps, 1))


def grid_size(image: torch.Tensor, stride: int) -> tuple[int, int]:
    """The affinity grid of a (..., H, W) image: ``(ceil(H / stride), ceil(W / stride))``."""
    h, w = image.shape[-2:]
    return (-(-h // stride), -(-w // stride))


def maps_dir(store: RunStore) -> Path:
    """Folder of the walked maps of a run (the cams format, read by the pseudo labels)."""
    return store.path("affinity") / "maps"


def frozen_backbone(cfg: Config, store: RunStore, device: torch.device) -> CamNet:
    """The run's trained classifier, in eval mode with no gradients: the affinity head's input."""
    backbone = channels_last(load_classifier(store.path("classifier") / "model.pt", cfg), device).eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone


def load_head(cfg: Config, store: RunStore, backbone: CamNet, device: torch.device) -> AffinityHead:
    """The affinity head the stage trained (``runs/<run>/affinity/model.pt``), in eval mode."""
    head = AffinityHead(backbone.backbone.feature_info.channels(), cfg.affinity.width, cfg.affinity.dim)
    head.load_state_dict(
        torch.load(store.path("affinity") / "model.pt", map_location="cpu", weights_only=True)
    )
    return head.to(device).eval()


def _stages(backbone: CamNet, img: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [s.float() for s in backbone.backbone(img)]


def _make_seeds(
    cfg: Config, source: Path, names: Sequence[str], out: Path, progress: bool
) -> dict[str, float]:
    """Seed PNGs of ``names`` from ``source``'s maps; returns the share of each seed kind."""
    a = cfg.affinity
    counts = {"object": 0, "background": 0, "ignore": 0}
    for name in tqdm(names, desc="affinity seeds", disable=not progress, leave=False):
        saved = np.load(source / f"{name}.npy", allow_pickle=True).item()
        seed = pseudo_label(
            saved["cam"].astype(np.float32), saved["keys"], a.fg_threshold, a.fg_threshold, a.bg_threshold
        )
        save_mask_png(out / f"{name}.png", seed)
        counts["ignore"] += int((seed == IGNORE_INDEX).sum())
        counts["background"] += int((seed == 0).sum())
        counts["object"] += int(((seed > 0) & (seed != IGNORE_INDEX)).sum())
    total = max(sum(counts.values()), 1)
    return {k: v / total for k, v in counts.items()}


def _train(
    cfg: Config, backbone: CamNet, seeds: Path, out: Path, device: torch.device, progress: bool
) -> dict[str, Any]:
    """Train the affinity head on the seed PNGs of the cam split (AffinityNet's loss)."""
    a = cfg.affinity
    transform = train_transform(cfg.classifier.crop_size, scale=tuple(a.scale), color_jitter=0.0)
    train_set = MaskFolderDataset(build_dataset(cfg, cfg.data.cam_split), seeds, transform)
    seed_everything(cfg.seed)  # the head's initial weights
    head = AffinityHead(backbone.backbone.feature_info.channels(), a.width, a.dim).to(device)
    offsets = neighbour_offsets(a.radius, center=False, half=True)
    # Adam, not IRN's SGD: only the small head learns, and it needs no backbone-style schedule.
    optimizer = torch.optim.AdamW(head.parameters(), lr=a.lr, weight_decay=1e-4)
    steps = a.epochs * max(len(train_set) // a.batch_size, 1)

    def make_loader(generator: torch.Generator) -> DataLoader:
        return DataLoader(
            train_set, batch_size=a.batch_size, shuffle=True, drop_last=True, generator=generator,
            collate_fn=collate, worker_init_fn=worker_init_fn, **loader_options(device, 0),
        )  # fmt: skip

    def step(model: AffinityHead, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        stages = _stages(backbone, to_device(batch["img"], device))
        feat = model(stages, grid_size(batch["img"], a.stride))
        # the seed on the affinity grid: nearest cells (IRN reads its labels at stride 4 the same way)
        seed = F.interpolate(batch["mask"][:, None].float(), size=feat.shape[-2:], mode="nearest")[:, 0]
        return affinity_loss(
            pairwise_affinity(feat, offsets), affinity_targets(seed.long().to(device), offsets)
        )

    history = fit(
        head, make_loader, step, optimizer, a.epochs, out / "checkpoint.pt", cfg.seed, device,
        scheduler=poly_lr(optimizer, steps), progress=progress, desc="affinity",
    )  # fmt: skip
    save_torch(out / "model.pt", head.state_dict())
    return {"history": history, "train_images": len(train_set)}


def walk_maps(
    head: AffinityHead,
    backbone: CamNet,
    img: torch.Tensor,
    cams: torch.Tensor,
    offsets: Offsets,
    beta: float,
    steps: int,
    stride: int = 4,
) -> torch.Tensor:
    """One image's maps walked along its learned affinity.

    Args:
        img: (1, 3, H, W) normalised image.
        cams: (k, H, W) the image's maps of its present classes.

    Returns:
        (k, H, W): walked on the affinity grid (maps area-resized onto it), bilinearly resized
        back and max-normalised per class.
    """
    with torch.no_grad():
        aff = pairwise_affinity(head(_stages(backbone, img), grid_size(img, stride)), offsets)
        small = F.interpolate(cams[None], size=aff.shape[-2:], mode="area")
        walked = random_walk(small, aff, offsets, beta, steps)
        up = F.interpolate(walked, size=cams.shape[-2:], mode="bilinear", align_corners=False)[0]
    return up / (up.flatten(1).amax(1)[:, None, None] + EPS)


def walk_folder(
    cfg: Config,
    head: AffinityHead,
    backbone: CamNet,
    source: Path,
    names: Sequence[str],
    out: Path,
    device: torch.device,
    beta: float | None = None,
    steps: int | None = None,
    progress: bool = True,
) -> int:
    """Walk the maps of ``names`` (images of the cam or seg split) from ``source`` into ``out``.

    ``beta`` and ``steps`` default to the config's (``benchmarks/tune_affinity.py`` passes others).
    Each file is written atomically in the cams format. Returns the count.
    """
    a = cfg.affinity
    beta, steps = a.beta if beta is None else beta, a.steps if steps is None else steps
    offsets = neighbour_offsets(a.radius)
    todo, n = set(names), 0
    for split in dict.fromkeys((cfg.data.cam_split, cfg.seg_split())):
        ds = build_dataset(cfg, split, eval_transform())
        for i, name in enumerate(
            tqdm(ds.names, desc=f"affinity walk {split}", disable=not progress, leave=False)
        ):
            if name not in todo:
                continue
            todo.discard(name)
            saved = np.load(source / f"{name}.npy", allow_pickle=True).item()
            cams = torch.from_numpy(saved["cam"].astype(np.float32)).to(device)
            img = to_device(ds[i]["img"][None], device)
            walked = walk_maps(head, backbone, img, cams, offsets, beta, steps, a.stride).cpu()
            with atomic_write(out / f"{name}.npy", "wb") as f:
                np.save(
                    f, {"keys": saved["keys"], "cam": walked.numpy().astype(np.float16)}, allow_pickle=True
                )
            n += 1
    return n


def run(cfg: Config, store: RunStore | None = None, progress: bool = True) -> dict[str, Any]:
    """Stage "affinity": seeds, the affinity head, and the walked maps of ``cfg.pseudo.method``.

    Reads the classifier and the method's maps of the cam and seg splits from the run store
    (:func:`cpmc_lib.pipeline.ensure` makes them). Training resumes from its checkpoint.

    Returns:
        :func:`cpmc_lib.cams.evaluate_cams`'s scores of the walked maps on the cam split (an
        oracle view, like every CAM score), plus ``method`` (the walked maps' source),
        ``seed_share`` (object / background / ignore shares of the seeds), ``history`` (loss per
        epoch), ``train_images``, ``images`` (maps walked), ``seconds`` and ``folder``.
    """
    store = store or RunStore.for_config(cfg)
    device = pick_device(cfg.device)
    method = cfg.pseudo.method
    source = store.path("cams") / method
    if cached_metrics(cfg, store, method) is None or not seg_maps_done(cfg, store, method):
        raise StageMissingError(missing_stage_message(cfg, source, f"{method!r} maps", "cams", method=method))
    store.require("classifier", cfg, "trained classifier")
    if distributed.world_size() > 1:
        raise NotImplementedError("the affinity stage runs on one process; run it without torchrun")
    with store.stage("affinity", cfg, device=str(device), keep=("checkpoint.pt",)) as st:
        if not st.done:
            start = time.perf_counter()
            seeds, maps = st.path / "seeds", st.path / "maps"
            seeds.mkdir(exist_ok=True)
            maps.mkdir(exist_ok=True)
            cam_names = build_dataset(cfg, cfg.data.cam_split).names
            names = dict.fromkeys([*cam_names, *build_dataset(cfg, cfg.seg_split()).names])
            share = _make_seeds(cfg, source, list(names), seeds, progress)
            backbone = frozen_backbone(cfg, store, device)
            trained = _train(cfg, backbone, seeds, st.path, device, progress)
            head = load_head(cfg, store, backbone, device)
            n = walk_folder(cfg, head, backbone, source, list(names), maps, device, progress=progress)
            raw = build_dataset(cfg, cfg.data.cam_split)  # masks only
            result = evaluate_cams(maps, raw, cfg.data.num_classes, cfg.cams.thresholds_step)
            result.update(
                method=method, seed_share=share, images=n, folder=str(maps),
                seconds=round(time.perf_counter() - start, 1), **trained,
            )  # fmt: skip
            save_json(st.path / "metrics.json", result)
            st.result = result
    return st.result
