"""A small training engine shared by the classifier and segmentation stages.

:func:`fit` runs epochs of ``step`` over a loader, checkpoints atomically after every epoch and,
when a checkpoint exists, resumes from it. Every epoch reseeds the random generators from
``(seed, epoch)`` and builds its loader with a generator seeded the same way, so an interrupted run
resumed from its last checkpoint ends with the same weights as an uninterrupted one.

Under ``torchrun`` (see :mod:`cpmc_lib.distributed`) the model is wrapped in
``DistributedDataParallel``: each rank runs its share of the global batch, gradients are averaged
across ranks, every rank validates its share of the val split (the hook reduces the scores), and
rank 0 alone shows the progress bar and writes the checkpoint.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .io import load_torch, save_torch
from .progress import tqdm
from .runtime import RANK_SEED_STRIDE, seed_everything

__all__ = ["fit", "load_checkpoint", "poly_lr"]


def poly_lr(optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9):
    """The poly schedule of DeepLab/IRN, ``lr * (1 - step / total_steps) ** power``: torch's ``PolynomialLR``."""
    return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=max(total_steps, 1), power=power)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`fit` (executing nothing, :func:`cpmc_lib.io.load_torch`).

    Raises:
        ValueError: the file is damaged, foreign or not a checkpoint of :func:`fit`; the message
            names it and says to delete it to restart training.
    """
    state = load_torch(path, "a training checkpoint", map_location)
    if not {"model", "epoch", "history"} <= set(state):
        raise ValueError(f"{path}: not a training checkpoint of this project (keys {sorted(state)[:5]}); "
                         "delete it to restart training")  # fmt: skip
    return state


def data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` (BatchNorm synchronised on CUDA).

    Each rank sees only its share of the global batch; plain BatchNorm would normalise with the
    statistics of that share, so the same global batch would train differently on 1 and N GPUs.
    SyncBatchNorm computes them over the whole global batch (parameters and buffers are kept, so
    the optimiser and the state dict are unaffected). PyTorch implements it for GPUs only: on CPU
    (gloo) each rank keeps its local statistics, and models with frozen BatchNorm are unaffected.
    """
    from torch.nn.parallel import DistributedDataParallel

    # Unused parameters exist: no loss reaches CamNet's side projections (they feed the prototypes only).
    kw: dict[str, Any] = {"find_unused_parameters": True}
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        kw["device_ids"] = [torch.cuda.current_device()]
    return DistributedDataParallel(model, **kw)


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
        on_epoch_end: validation hook ``(epoch, model) -> metrics`` merged into the epoch's record;
            under torchrun it runs on every rank, each scoring its share, and must return the
            metrics of the whole split (reduced over the ranks), so no rank waits on another.
        grad_clip: max gradient norm, or None.

    Returns:
        The history: one dict per epoch with the mean of each ``step`` output and the hook's metrics.

    AMP (bfloat16 autocast is not used; float16 with a GradScaler) is on when ``device`` is CUDA.

    Under ``torchrun`` ``step`` receives the DDP-wrapped model, ``make_loader`` should shard with
    :func:`cpmc_lib.distributed.make_sampler`, the logged means are over all ranks, and the
    history is the same on every rank.
    """
    checkpoint = Path(checkpoint)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history = _resume(checkpoint, model, optimizer, scheduler, scaler, device)
    main = distributed.is_main()
    net = data_parallel(model, device) if distributed.world_size() > 1 else model
    for epoch in range(len(history), epochs):
        # Other ranks offset the global seed (dropout, augmentation in the main process); the
        # loader's generator stays shared, because every rank must draw the same permutation.
        seed_everything(seed * 1000 + epoch + RANK_SEED_STRIDE * distributed.rank())
        gen = torch.Generator().manual_seed(seed * 1000 + epoch)
        net.train()
        loader = make_loader(gen)
        # A counting bar, not tqdm(loader): tqdm.auto's bar calls iter(loader) when built, which
        # for a DataLoader with workers starts a second, unused set of worker processes (and a
        # notebook's bar keeps them alive, one set per epoch).
        bar = tqdm(
            total=len(loader) if hasattr(loader, "__len__") else None,
            desc=f"{desc} {epoch + 1}/{epochs}",
            disable=not (progress and main),
            leave=False,
        )
        sums, count = _epoch(net, model, loader, step, optimizer, scheduler, scaler, grad_clip, bar, use_amp,
                             lambda loss, epoch=epoch: _diverged(desc, loss, epoch, checkpoint))  # fmt: skip
        bar.close()
        if distributed.world_size() > 1:  # every rank ran `count` steps: the mean of the rank means
            sums = distributed.all_reduce_sum({**sums, "_count": count})
            count = round(sums.pop("_count"))
        record = {"epoch": epoch + 1, **{k: v / max(count, 1) for k, v in sums.items()}}
        if on_epoch_end is not None:
            model.eval()
            with torch.no_grad():
                record.update(on_epoch_end(epoch, model))
        history.append(distributed.broadcast_object(record))
        if main:
            state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler if use_amp else None}
            saved = {k: None if v is None else v.state_dict() for k, v in state.items()}
            save_torch(checkpoint, {**saved, "epoch": epoch, "history": history})
        distributed.barrier()  # no rank runs ahead of the checkpoint it would resume from
    return history


def _resume(checkpoint: Path, model, optimizer, scheduler, scaler, device) -> list[dict[str, float]]:
    """Load ``checkpoint`` into the model, optimiser, scheduler and scaler if it exists; its history."""
    if not checkpoint.exists():
        return []
    state = load_checkpoint(checkpoint, map_location=device)
    from .models import load_state_checked  # local: keeps this generic engine's imports light

    # A checkpoint of another architecture (copied in by hand): name the file, not every key.
    load_state_checked(model, state["model"], checkpoint, "; delete it to restart training")
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return list(state["history"])[: state["epoch"] + 1]  # one record per finished epoch


def _diverged(desc: str, loss: float, epoch: int, checkpoint: Path) -> FloatingPointError:
    return FloatingPointError(
        f"{desc}: loss became {loss} at epoch {epoch + 1}; lower the learning rate "
        f"(last good checkpoint: {checkpoint if checkpoint.exists() else 'none'})"
    )


def _epoch(net, model, loader, step, optimizer, scheduler, scaler, grad_clip, bar, use_amp, diverged
           ) -> tuple[dict[str, float], int]:  # fmt: skip
    """One pass of ``step`` over ``loader``: the sums of its outputs and the number of steps."""
    sums: dict[str, float] = {}
    count = 0
    for batch in loader:
        amp = torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()
        with amp:
            out = step(net, batch)
        loss = out["loss"]
        if not math.isfinite(loss.item()):
            raise diverged(loss.item())
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
        bar.update(1)
        bar.set_postfix(loss=f"{sums['loss'] / count:.4f}")
    return sums, count
