"""Stage "classifier": train the multi-label CAM network on image labels (IRN's ``train_cam``).

The loss is the multi-label soft-margin loss on the GAP scores; the optimiser is SGD with
momentum (or AdamW), a poly schedule and 10x learning rate on the new layers (head and side
projections). Training runs through :func:`cpmc_lib.engine.fit`,
which checkpoints every epoch into the stage folder (``checkpoint.pt``, kept across crashes) and
resumes from it.

Deviation from IRN/SIPE: IRN's ``PolyOptimizer`` passes the weight decay as SGD's positional
*momentum* argument, so it effectively trains with momentum 1e-4 (plain SGD). This stage uses
``classifier.momentum`` (0.9 by default), the usual SGD setting; set it to 0 for IRN's behaviour.

Outputs in ``runs/<run>/classifier/``: ``model.pt`` (CamNet state dict), ``history.json`` (loss
and validation mAP/F1 per epoch) and the manifest whose result is
``{"val_mAP", "val_F1", "epochs", "seconds", "model"}``.

Example:
    >>> result = run(cfg, store)  # doctest: +SKIP
    >>> result["val_mAP"]  # doctest: +SKIP
    99.6
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from . import distributed
from .config import Config
from .datasets import build_dataset, collate
from .engine import fit, poly_lr
from .io import save_json, save_torch
from .metrics import classification_metrics
from .models import CamNet, build_model
from .runtime import channels_last, loader_options, pick_device, seed_everything, to_device, worker_init_fn
from .transforms import eval_transform, train_transform

if TYPE_CHECKING:
    from .store import RunStore

__all__ = ["classification_loss", "make_optimizer", "predict_logits", "run", "train"]


def classification_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Multi-label soft-margin loss (mean BCE with logits) of IRN/SIPE.

    Args:
        logits: (B, K-1) image scores.
        label: (B, K-1) multi-hot labels.
    """
    return F.multilabel_soft_margin_loss(logits, label)


def make_optimizer(model: CamNet, cfg: Config) -> torch.optim.Optimizer:
    """SGD (momentum ``classifier.momentum``) or AdamW; new layers get ``new_lr_mult`` x lr."""
    c = cfg.classifier
    new = {id(p) for p in model.new_parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in new and p.requires_grad], "lr": c.lr},
        {"params": model.new_parameters(), "lr": c.lr * c.new_lr_mult},
    ]
    if c.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    if c.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay)
    raise ValueError(f"classifier.optimizer={c.optimizer!r} is not one of: sgd, adamw")


@torch.no_grad()
def predict_logits(
    model: CamNet, batches: Iterable[dict[str, Any]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image scores and labels over a loader: ``(N, K-1)`` logits and ``(N, K-1)`` labels on the CPU.

    Batches whose images differ in size (a list from :func:`cpmc_lib.datasets.collate`) are run
    one image at a time.
    """
    model.eval()
    logits, labels = [], []
    for batch in batches:
        imgs = batch["img"]
        imgs = [x[None] for x in imgs] if isinstance(imgs, list) else [imgs]
        logits += [model(x.to(device))["logits"].float().cpu() for x in imgs]
        labels.append(batch["label"])
    return torch.cat(logits), torch.cat(labels)


def train(cfg: Config, out: str | Path, device: torch.device, progress: bool = True) -> dict[str, Any]:
    """Train the classifier of ``cfg`` into the folder ``out`` (resuming from its ``checkpoint.pt``).

    Returns:
        ``{"val_mAP", "val_F1", "epochs", "seconds", "model"}`` (metrics in percent, of the last epoch).
    """
    start = time.perf_counter()
    out = Path(out)
    c = cfg.classifier
    seed_everything(cfg.seed)  # the initial weights
    model = channels_last(build_model(cfg), device)
    train_set = build_dataset(cfg, cfg.data.train_split, train_transform(c.crop_size))
    val_set = build_dataset(cfg, cfg.data.val_split, eval_transform())
    if len(train_set) < c.batch_size:
        raise ValueError(
            f"{len(train_set)} training images is fewer than classifier.batch_size={c.batch_size}"
        )

    batch_size = distributed.local_batch_size(c.batch_size, "classifier.batch_size")  # this rank's share

    def make_loader(generator: torch.Generator) -> DataLoader:
        return DataLoader(
            train_set, batch_size=batch_size, sampler=distributed.make_sampler(train_set, generator),
            drop_last=True, generator=generator, collate_fn=collate, worker_init_fn=worker_init_fn,
            **loader_options(device, c.num_workers),
        )  # fmt: skip

    val_loader = DataLoader(  # under torchrun each rank scores its share (the logits are gathered)
        distributed.shard_dataset(val_set), batch_size=c.batch_size, collate_fn=collate,
        **loader_options(device, c.num_workers),
    )  # fmt: skip

    def step(model: CamNet, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        img, label = to_device(batch["img"], device), batch["label"].to(device)
        return {"loss": classification_loss(model(img)["logits"].float(), label)}

    def validate(epoch: int, model: CamNet) -> dict[str, float]:
        logits, labels = predict_logits(model, val_loader, device)
        scores = classification_metrics(distributed.gather_cat(logits), distributed.gather_cat(labels))
        return {"val_mAP": scores["mAP"], "val_F1": scores["F1"]}

    optimizer = make_optimizer(model, cfg)
    steps = c.epochs * (len(train_set) // c.batch_size)
    history = fit(
        model, make_loader, step, optimizer, c.epochs, out / "checkpoint.pt", cfg.seed, device,
        scheduler=poly_lr(optimizer, steps), on_epoch_end=validate, progress=progress, desc="classifier",
    )  # fmt: skip
    if distributed.is_main():
        save_json(out / "history.json", history)
        save_torch(out / "model.pt", model.state_dict())
    last = history[-1] if history else {}
    return {
        "val_mAP": last.get("val_mAP", float("nan")),
        "val_F1": last.get("val_F1", float("nan")),
        "epochs": c.epochs,
        "seconds": round(time.perf_counter() - start, 1),
        "model": str(out / "model.pt"),
    }


def run(cfg: Config, store: RunStore, progress: bool = True) -> dict[str, Any]:
    """Stage "classifier": reuse a finished run for this config, else train (resuming after a crash).

    When the classifier starts from the ImageNet stand-in (:meth:`~cpmc_lib.config.Config.uses_pretrain_stage`),
    it reads the backbone weights of the run store's finished "pretrain" stage.

    Returns:
        The stage result ``{"val_mAP", "val_F1", "epochs", "seconds", "model"}``.
    """
    device = pick_device(cfg.device)
    with store.stage("classifier", cfg, device=str(device), keep=("checkpoint.pt",)) as st:
        if not st.done:
            if cfg.uses_pretrain_stage():  # the ImageNet stand-in
                weights = store.require("pretrain", cfg, "pretrained backbone") / "weights.pt"
                cfg = cfg.replace(**{"classifier.weights": str(weights)})
            st.result = train(cfg, st.path, device, progress)
    return st.result
