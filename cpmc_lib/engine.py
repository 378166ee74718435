"""A small training engine shared by the classifier and segmentation stages.

:func:`fit` runs epochs of ``step`` over a loader, checkpoints atomically after every epoch and,
when a checkpoint exists, resumes from it. Every epoch reseeds the random generators from
``(seed, epoch)`` and builds its loader with a generator seeded the same way, so an interrupted run
resumed from its last checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .io import save_torch
from .runtime import seed_everything

__all__ = ["fit", "load_checkpoint", "poly_lr"]


def poly_lr(optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9):
    """The poly schedule of DeepLab/IRN: ``lr * (1 - step / total_steps) ** power``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: (1 - min(step, total_steps) / max(total_steps, 1)) ** power
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit`, with a clear error for a damaged file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # pickle/zip errors from a foreign or damaged file
        raise RuntimeError(f"{path}: cannot read checkpoint ({e}); delete it to restart training") from e


def fit(
    model: torch.nn.Module,
    make_loader: Callable[[torch.Generator], Iterable[Any]],
    step: Callable[[torch.nn.Module, Any], dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    checkpoint: str | Path,
    seed: int,
    device: torch.device,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    on_epoch_end: Callable[[int, torch.nn.Module], dict[str, float]] | None = None,
    grad_clip: float | None = None,
    progress: bool = True,
    desc: str = "train",
) -> list[dict[str, float]]:
    """Train ``model`` for ``epochs``, resuming from ``checkpoint`` if it exists.

    Args:
        make_loader: builds the epoch's loader given a seeded ``torch.Generator`` (pass it to the
            DataLoader or sampler so shuffling is reproducible).
        step: ``step(model, batch) -> {"loss": tensor, ...}``; other entries are logged as means.
        checkpoint: file written atomically after every epoch (model, optimizer, scheduler, history).
        on_epoch_end: validation hook ``(epoch, model) -> metrics`` merged into the epoch's record.
        grad_clip: max gradient norm, or None.

    Returns:
        The history: one dict per epoch with the mean of each ``step`` output and the hook's metrics.

    AMP (bfloat16 autocast is not used; float16 with a GradScaler) is on when ``device`` is CUDA.
    """
    checkpoint = Path(checkpoint)
    history: list[dict[str, float]] = []
    start = 0
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if checkpoint.exists():
        state = load_checkpoint(checkpoint, map_location=device)
        from .models import load_state_checked  # local: keeps this generic engine's imports light

        # A checkpoint of another architecture (copied in by hand): name the file, not every key.
        load_state_checked(model, state["model"], checkpoint, "; delete it to restart training")
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history = list(state["history"])
        start = state["epoch"] + 1
    for epoch in range(start, epochs):
        seed_everything(seed * 1000 + epoch)
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        model.train()
        sums: dict[str, float] = {}
        count = 0
        bar = tqdm(make_loader(gen), desc=f"{desc} {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for batch in bar:
            amp = torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()
            with amp:
                out = step(model, batch)
            loss = out["loss"]
            if not math.isfinite(loss.item()):
                raise FloatingPointError(
                    f"{desc}: loss became {loss.item()} at epoch {epoch + 1}; lower the learning rate "
                    f"(last good checkpoint: {checkpoint if checkpoint.exists() else 'none'})"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            count += 1
            bar.set_postfix(loss=f"{sums['loss'] / count:.4f}")
        record = {"epoch": epoch + 1, **{k: v / max(count, 1) for k, v in sums.items()}}
        if on_epoch_end is not None:
            model.eval()
            with torch.no_grad():
                record.update(on_epoch_end(epoch, model))
        history.append(record)
        save_torch(
            checkpoint,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict() if use_amp else None,
                "epoch": epoch,
                "history": history,
            },
        )
    return history
