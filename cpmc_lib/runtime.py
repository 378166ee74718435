"""Device choice and seeding, passed in explicitly (nothing here runs on import)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = [
    "RANK_SEED_STRIDE",
    "loader_options",
    "pick_device",
    "seed_everything",
    "to_device",
    "worker_init_fn",
]

# Seed offset per torchrun rank, so ranks draw different augmentations from the same epoch seed.
RANK_SEED_STRIDE = 1_000_003


def pick_device(spec: str = "auto") -> torch.device:
    """Resolve a device spec: ``"auto"`` is ``CPMC_DEVICE`` if set, else ``cuda`` when present, else CPU.

    Example:
        >>> pick_device("cpu")
        device(type='cpu')
    """
    if spec == "auto":
        spec = os.environ.get("CPMC_DEVICE", "") or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {spec!r} requested but CUDA is not available; use device=cpu (or unset CPMC_DEVICE)"
        )
    return device


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; on CPU, same seed and config give the same numbers."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuDNN autotuning picks kernels by timing, which breaks run-to-run equality.
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def worker_init_fn(worker_id: int) -> None:
    """Seed NumPy and ``random`` in a DataLoader worker from the seed torch gave it.

    Under torchrun every rank's loader derives its worker seed from the shared epoch generator;
    ranks other than 0 (``RANK`` in the environment) offset it so their augmentations differ.
    """
    rank = int(os.environ.get("RANK", 0))
    if rank:
        torch.manual_seed(torch.initial_seed() + RANK_SEED_STRIDE * rank)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def loader_options(device: torch.device, num_workers: int) -> dict:
    """DataLoader settings for ``device``: on CUDA, pinned memory (asynchronous host-to-GPU copies)
    and workers kept across epochs; on CPU, the config's workers only (pinning needs a GPU).

    Example:
        >>> loader_options(torch.device("cpu"), 0)
        {'num_workers': 0}
    """
    opts: dict = {"num_workers": num_workers}
    if device.type == "cuda":
        opts["pin_memory"] = True
    return opts


def to_device(img: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A (B, 3, H, W) batch on ``device``, laid out channels-last like the models
    (:func:`channels_last`); on CUDA copied asynchronously from pinned memory."""
    return img.to(device, non_blocking=device.type == "cuda").contiguous(memory_format=torch.channels_last)


def channels_last(model: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """``model`` on ``device`` with channels-last weights.

    The fast layout on both targets: tensor-core convolutions on CUDA, oneDNN's on CPU (measured
    on the 2-core CPU: classifier training steps 1.5x, segmentation 1.2x faster than contiguous).
    """
    return model.to(device).to(memory_format=torch.channels_last)
