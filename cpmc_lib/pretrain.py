"""Stage "pretrain": an offline ImageNet stand-in for the classifier's backbone.

Real WSSS starts from ImageNet features, and prototype methods lean on them: pixels of one
object must already look alike to the network. Offline, this stage gives the synthetic default
the equivalent: it trains the classifier's backbone (the same timm architecture as
``cfg.classifier``) on a separate synthetic *source* set and saves a backbone-only state dict,
which the classifier loads through the same path as real ImageNet weights
(``classifier.weights`` and :func:`cpmc_lib.models.load_weights`).

**The source set** is disjoint from the benchmark by construction: every image holds one object
whose shape (:data:`SOURCE_SHAPES`), texture (:data:`SOURCE_TEXTURES`) and colour
(:data:`SOURCE_COLOURS`) appear nowhere in :mod:`cpmc_lib.synth` (no benchmark shape or texture
name, every colour at least 38 RGB units from every benchmark colour after jitter), on the
benchmark's neutral background. Texture period and orientation, pose and colour vary per image.
Images are drawn on the fly from a generator seeded by ``(seed, split, index)``, so the set is
deterministic and needs no disk.

**The task** is three single-label classifications, one head each (shape, texture, colour), like
the classifier's head a 1x1 conv whose spatial mean gives the scores. Separate heads are easier
for a small receptive field than one joint (shape x texture x colour) class: a probe's 48-way
joint task stayed at 43 % accuracy and its weights hurt every map.

Outputs in ``runs/<run>/pretrain/``: ``weights.pt`` (backbone-only state dict, timm names),
``history.json`` and the manifest whose result is ``{"accuracy", "shape", "texture", "colour",
"seconds", "weights"}`` (accuracies in percent on held-out source images; ``accuracy`` is the
mean of the three heads).

Example:
    >>> result = run(cfg)  # doctest: +SKIP
    >>> cfg = cfg.replace(**{"classifier.weights": result["weights"]})  # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from . import distributed
from .config import Config
from .engine import fit, poly_lr
from .io import save_json, save_torch
from .models import build_model
from .runtime import channels_last, pick_device, seed_everything, to_device
from .synth import neutral_background
from .transforms import eval_transform

if TYPE_CHECKING:
    from .store import RunStore

__all__ = [
    "SOURCE_COLOURS",
    "SOURCE_SHAPES",
    "SOURCE_TEXTURES",
    "PretrainNet",
    "SourceSet",
    "pretrain_loss",
    "render_source_image",
    "run",
    "source_shape_mask",
    "source_texture",
    "train",
]

# None of these names or colours occurs in cpmc_lib.synth (tests/test_pretrain.py checks it).
SOURCE_SHAPES = ("astroid", "ring", "crescent", "semicircle", "tee", "ell")
SOURCE_TEXTURES = ("flat", "zigzag", "bricks", "spots", "plaid", "spiral")
SOURCE_COLOURS = {
    "teal": (0, 128, 128),
    "navy": (25, 35, 110),
    "lime": (165, 225, 60),
    "maroon": (125, 20, 45),
    "salmon": (250, 128, 114),
    "pink": (255, 170, 220),
    "mint": (150, 250, 190),
    "indigo": (75, 0, 130),
}
COLOUR_JITTER = 12  # per channel, uniform: the colour head learns a range, not one value
SCALE = (0.22, 0.36)  # major semi-axis as a fraction of the image side
ASPECT = (0.6, 1.0)  # minor / major semi-axis
PERIOD = (4.0, 9.0)  # texture period in px, around the benchmark's 5-8 px
_SPLITS = ("train", "val")
_SOURCE_TAG = 7919  # keeps source seeds apart from the benchmark's (seed, split, index)


def source_shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test of a unit source shape at normalised local coordinates ``(u, v)``; (H, W) bool."""
    r2 = u * u + v * v
    if shape == "astroid":  # a four-pointed star
        return np.abs(u) ** 0.7 + np.abs(v) ** 0.7 <= 1.0
    if shape == "ring":
        return (r2 <= 1.0) & (r2 >= 0.5**2)
    if shape == "crescent":
        return (r2 <= 1.0) & ((u - 0.45) ** 2 + v * v > 0.75**2)
    if shape == "semicircle":
        return (r2 <= 1.0) & (v >= -0.2)
    if shape == "tee":
        return ((np.abs(u) <= 1.0) & (v >= -1.0) & (v <= -0.45)) | ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0))
    if shape == "ell":
        return ((u >= -1.0) & (u <= -0.4) & (np.abs(v) <= 1.0)) | (
            (v >= 0.4) & (v <= 1.0) & (np.abs(u) <= 1.0)
        )
    raise ValueError(f"unknown source shape {shape!r}; shapes: {', '.join(SOURCE_SHAPES)}")


def source_texture(
    texture: str, xr: np.ndarray, yr: np.ndarray, period: float, rng: np.random.Generator
) -> np.ndarray:
    """Pattern in [0, 1] at local pixel coordinates ``(xr, yr)`` (arrays of one shape), period in px."""
    p = period
    if texture == "flat":
        return np.zeros_like(xr)
    if texture == "zigzag":
        tri = np.abs((xr / p) % 2 - 1)  # triangle wave
        return (np.sin(2 * np.pi * (yr + p * tri) / p) > 0).astype(np.float32)
    if texture == "bricks":
        row = np.floor(yr / p)
        mortar = ((yr % p) < 1.2) | (((xr + (row % 2) * p) % (2 * p)) < 1.2)
        return (~mortar).astype(np.float32)
    if texture == "spots":  # random positions on a jittered lattice, unlike the benchmark's regular dots
        cell = np.floor(xr / p) * 7919 + np.floor(yr / p) * 104729
        off = rng.random(997) * 0.6 * p
        ox, oy = off[cell.astype(np.int64) % 997], off[(cell.astype(np.int64) + 1) % 997]
        return ((((xr % p) - ox - 0.2 * p) ** 2 + ((yr % p) - oy - 0.2 * p) ** 2) < (0.22 * p) ** 2).astype(
            np.float32
        )
    if texture == "plaid":  # three tones: two crossing square waves of different weight
        return 0.35 * (np.sin(2 * np.pi * xr / p) > 0) + 0.65 * (np.sin(2 * np.pi * yr / (1.5 * p)) > 0)
    if texture == "spiral":
        r, a = np.sqrt(xr * xr + yr * yr), np.arctan2(yr, xr)
        return (np.sin(2 * np.pi * r / p + 2 * a) > 0).astype(np.float32)
    raise ValueError(f"unknown source texture {texture!r}; textures: {', '.join(SOURCE_TEXTURES)}")


def render_source_image(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one source image: a random (shape, texture, colour) object on a neutral background.

    Returns:
        ``img`` (H, W, 3) uint8 RGB and ``target`` (3,) int64: indices into
        :data:`SOURCE_SHAPES`, :data:`SOURCE_TEXTURES` and :data:`SOURCE_COLOURS`.
    """
    s, t, c = (int(rng.integers(n)) for n in (len(SOURCE_SHAPES), len(SOURCE_TEXTURES), len(SOURCE_COLOURS)))
    img = neutral_background(size, rng)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    a = rng.uniform(*SCALE) * size
    b = a * rng.uniform(*ASPECT)
    cx, cy = rng.uniform(0.3, 0.7, size=2) * size
    theta = rng.uniform(0, 2 * np.pi)
    cos, sin = np.cos(theta), np.sin(theta)
    xr, yr = (x - cx) * cos + (y - cy) * sin, -(x - cx) * sin + (y - cy) * cos
    region = source_shape_mask(SOURCE_SHAPES[s], xr / a, yr / b)
    # the texture turns on its own, so its orientation says nothing about the shape's
    phi = rng.uniform(0, 2 * np.pi)
    tx, ty = xr * np.cos(phi) + yr * np.sin(phi), -xr * np.sin(phi) + yr * np.cos(phi)
    pattern = source_texture(SOURCE_TEXTURES[t], tx[region], ty[region], rng.uniform(*PERIOD), rng)
    colour = np.asarray(list(SOURCE_COLOURS.values())[c], np.float32)
    colour = np.clip(colour + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=3), 0, 255)
    img[region] = colour * (0.65 + 0.55 * pattern[:, None])  # the benchmark bodies' tone range
    img += 3 * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), np.array([s, t, c], np.int64)


class SourceSet(Dataset):
    """``n`` source images of one split, drawn on access; image ``i`` depends only on (seed, split, i).

    Items are ``{"img": (3, H, W) float32 normalised like the benchmark, "target": (3,) int64}``.
    """

    def __init__(self, n: int, size: int, seed: int, split: str = "train") -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        self.n, self.size, self.seed, self.split = n, size, seed, split
        self.transform = eval_transform()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([_SOURCE_TAG, self.seed, _SPLITS.index(self.split), i])
        img, target = render_source_image(self.size, rng)
        img = tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1))
        return {"img": self.transform(img).as_subclass(torch.Tensor), "target": torch.from_numpy(target)}


class PretrainNet(nn.Module):
    """The classifier's backbone with one 1x1-conv head per source task (shape, texture, colour).

    Args:
        backbone: a timm features-only backbone (``CamNet.backbone``); its last stage feeds the heads.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.sizes = (len(SOURCE_SHAPES), len(SOURCE_TEXTURES), len(SOURCE_COLOURS))
        self.head = nn.Conv2d(backbone.feature_info.channels()[-1], sum(self.sizes), 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Scores of each task: (B, 3, H, W) -> a tuple of (B, n_task) = spatial mean of the head map."""
        logits = self.head(self.backbone(x)[-1]).mean(dim=(2, 3))
        return tuple(logits.split(self.sizes, dim=1))


def pretrain_loss(logits: tuple[torch.Tensor, ...], target: torch.Tensor) -> torch.Tensor:
    """Sum of the tasks' cross-entropies; ``logits`` one (B, n_task) per task, ``target`` (B, tasks)."""
    return sum(F.cross_entropy(lg.float(), target[:, j]) for j, lg in enumerate(logits))


@torch.no_grad()
def _accuracy(net: PretrainNet, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Per-task accuracy in percent over ``loader``; ``accuracy`` is their mean."""
    correct, total = torch.zeros(3), 0
    for batch in loader:
        logits = net(to_device(batch["img"], device))
        pred = torch.stack([lg.argmax(1).cpu() for lg in logits], dim=1)
        correct += (pred == batch["target"]).sum(0).float()
        total += len(pred)
    counts = distributed.all_reduce_sum({"total": total, **{str(i): float(c) for i, c in enumerate(correct)}})
    correct, total = torch.tensor([counts[str(i)] for i in range(3)]), counts["total"]
    acc = (100 * correct / max(total, 1)).tolist()
    out = {name: round(a, 2) for name, a in zip(("shape", "texture", "colour"), acc, strict=True)}
    out["accuracy"] = round(sum(acc) / 3, 2)
    return out


def train(cfg: Config, out: str | Path, device: torch.device, progress: bool = True) -> dict[str, Any]:
    """Pretrain the backbone of ``cfg.classifier`` on the source set into ``out`` (resuming a checkpoint).

    Returns:
        ``{"accuracy", "shape", "texture", "colour", "seconds", "weights"}``.
    """
    start = time.perf_counter()
    out, p = Path(out), cfg.pretrain
    seed_everything(cfg.seed)
    # pretrained=False also skips classifier.weights: the stage starts from scratch, never from itself
    net = channels_last(PretrainNet(build_model(cfg, pretrained=False).backbone), device)
    train_set = SourceSet(p.images, p.size, cfg.seed, "train")
    # under torchrun each rank scores its share; the counts are summed
    val_loader = DataLoader(distributed.shard_dataset(SourceSet(p.val_images, p.size, cfg.seed, "val")),
                            batch_size=p.batch_size)  # fmt: skip
    if len(train_set) < p.batch_size:
        raise ValueError(f"pretrain.images={p.images} is fewer than pretrain.batch_size={p.batch_size}")

    batch_size = distributed.local_batch_size(p.batch_size, "pretrain.batch_size")  # this rank's share

    def make_loader(generator: torch.Generator) -> DataLoader:
        return DataLoader(
            train_set, batch_size=batch_size, sampler=distributed.make_sampler(train_set, generator),
            drop_last=True, generator=generator,
        )  # fmt: skip

    def step(net: PretrainNet, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": pretrain_loss(net(to_device(batch["img"], device)), batch["target"].to(device))}

    optimizer = torch.optim.SGD(net.parameters(), lr=p.lr, momentum=0.9, weight_decay=p.weight_decay)
    steps = p.epochs * (len(train_set) // p.batch_size)
    history = fit(
        net, make_loader, step, optimizer, p.epochs, out / "checkpoint.pt", cfg.seed, device,
        scheduler=poly_lr(optimizer, steps), on_epoch_end=lambda _e, m: _accuracy(m, val_loader, device),
        progress=progress, desc="pretrain",
    )  # fmt: skip
    if distributed.is_main():
        save_json(out / "history.json", history)
        # backbone-only with timm's names: the form load_weights takes for real ImageNet weights
        save_torch(out / "weights.pt", net.backbone.state_dict())
    last = history[-1] if history else {}
    return {
        **{k: last.get(k, float("nan")) for k in ("accuracy", "shape", "texture", "colour")},
        "seconds": round(time.perf_counter() - start, 1),
        "weights": str(out / "weights.pt"),
    }


def run(cfg: Config, store: RunStore, progress: bool = True) -> dict[str, Any]:
    """Stage "pretrain": reuse finished weights for this config, else pretrain (resuming after a crash).

    Runs whether or not ``cfg.pretrain.enabled`` is set; ``enabled`` only tells the classifier
    stage to use the result.

    Returns:
        ``{"accuracy", "shape", "texture", "colour", "seconds", "weights"}``.
    """
    device = pick_device(cfg.device)
    with store.stage("pretrain", cfg, device=str(device), keep=("checkpoint.pt",)) as st:
        if not st.done:
            st.result = train(cfg, st.path, device, progress)
    return st.result
