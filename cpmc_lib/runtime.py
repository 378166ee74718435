"""Device choice and seeding, passed in explicitly (nothing here runs on import)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["RANK_SEED_STRIDE", "pick_device", "seed_everything", "worker_init_fn"]

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
