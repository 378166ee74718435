"""Training and evaluation transforms for the sample dicts of :mod:`cpmc_lib.datasets`.

Everything is built from ``torchvision.transforms.v2``, which transforms a whole dict of
``tv_tensors`` at once: a geometric transform moves the image (``tv_tensors.Image``), the mask and
the diagnostics map (``tv_tensors.Mask``, resized with nearest neighbour) identically, photometric
transforms touch only the image, and strings (``name``) and plain tensors (the multi-hot ``label``)
pass through unchanged.

Example:
    >>> import torch
    >>> from torchvision import tv_tensors
    >>> sample = {
    ...     "img": tv_tensors.Image(torch.zeros(3, 40, 50, dtype=torch.uint8)),
    ...     "mask": tv_tensors.Mask(torch.zeros(40, 50, dtype=torch.int64)),
    ...     "label": torch.tensor([1.0, 0.0]),
    ... }
    >>> out = train_transform(32)(sample)
    >>> tuple(out["img"].shape), out["img"].dtype, tuple(out["mask"].shape)
    ((3, 32, 32), torch.float32, (32, 32))
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .io import IGNORE_INDEX

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RandomScale",
    "denormalize",
    "eval_transform",
    "train_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomScale(v2.Transform):
    """Resize by a factor drawn uniformly from ``scale``, relative to the input's own size.

    torchvision's ``RandomResize`` and ``ScaleJitter`` draw absolute sizes or scale relative to a
    fixed target; WSSS training rescales each image relative to itself, so the factor is drawn
    here and the resize is left to ``F.resize`` (bilinear for images, nearest for masks).

    Args:
        scale: (low, high) range of the resize factor.
    """

    def __init__(self, scale: tuple[float, float] = (0.7, 1.3)):
        super().__init__()
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
        self.scale = tuple(scale)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = next(F.get_size(x) for x in flat_inputs if isinstance(x, (tv_tensors.Image, tv_tensors.Mask)))
        factor = self.scale[0] + float(torch.rand(())) * (self.scale[1] - self.scale[0])
        return {"size": [max(1, round(h * factor)), max(1, round(w * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, size=params["size"], antialias=True)


def _to_normalized_float() -> list[v2.Transform]:
    # A bare dtype converts only images (and videos); masks keep int64.
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transform(
    crop_size: int,
    scale: tuple[float, float] = (0.7, 1.3),
    flip: bool = True,
    color_jitter: float = 0.3,
) -> v2.Compose:
    """Random scale, pad-if-needed + random crop, horizontal flip, colour jitter, normalisation.

    Padding fills the image with 0 and every mask (``mask``, ``diag``) with 255 (ignore), so
    padded pixels never count as background.

    Args:
        crop_size: side of the square crop.
        scale: range of the random resize factor; ``(1, 1)`` disables it.
        flip: random horizontal flip with probability 0.5.
        color_jitter: brightness, contrast and saturation jitter strength (0 disables it).

    Returns:
        A transform mapping a sample dict to one with ``img`` float32 (3, crop, crop), normalised,
        and masks int64 (crop, crop).
    """
    steps: list[v2.Transform] = []
    if tuple(scale) != (1.0, 1.0):
        steps.append(RandomScale(scale))
    steps.append(
        v2.RandomCrop(
            crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}
        )
    )
    if flip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    return v2.Compose(steps + _to_normalized_float())


def eval_transform() -> v2.Compose:
    """Convert the image to float and normalise it; geometry untouched."""
    return v2.Compose(_to_normalized_float())


def denormalize(img: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation, for plotting.

    Args:
        img: normalised float image of shape (3, H, W) or (B, 3, H, W).

    Returns:
        uint8 tensor of the same shape (channels first; ``.permute(1, 2, 0)`` for matplotlib).
    """
    mean = torch.tensor(IMAGENET_MEAN, dtype=img.dtype, device=img.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=img.dtype, device=img.device).view(3, 1, 1)
    x = img.as_subclass(torch.Tensor) * std + mean
    return (x * 255).round().clamp(0, 255).to(torch.uint8)
