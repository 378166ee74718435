"""Stage "cams": maps of every cam-split image by one CAM method, saved per image and scored.

The methods themselves (the classifier CAM, the CPMC maps, the Grad-CAM family) and their
multi-scale + flip fusion live in :mod:`cpmc_lib.cam_methods`; this stage runs one on the
trained classifier of the run store, saves the maps and scores them (IRN's ``make_cam`` and
``eval_cam``). It reads the classifier from ``runs/<run>/classifier/`` and stops with an error
naming the command that trains it when it is missing (:func:`cpmc_lib.pipeline.ensure` runs the
stages in order).

Outputs in ``runs/<run>/cams/<method>/``: one map file per image (:mod:`cpmc_lib.mapfile`: the
present classes' ids and their (k, H, W) maps) and ``metrics.json``. All methods share the one
"cams" stage of the run store (its key covers data, classifier and CAM inference); each method
lives in its own sub-folder, and a method whose ``metrics.json`` records its current key
(:meth:`~cpmc_lib.store.RunStore.map_metrics`) is reused, not recomputed.

When the segmentation split (``cfg.seg_split()``, VOC: train_aug) holds images the cam split
lacks, ``run(..., seg_split=True)`` adds their maps to the method's folder, unscored (CAMs are
scored on the cam split, as IRN, SIPE and SFC do), with a ``seg_split.json`` written last that
records the method's key and the split; the pipeline asks for it for the maps the pseudo labels read.

Example:
    >>> result = run(cfg, store, method="cam")  # doctest: +SKIP
    >>> result["miou"], result["threshold"]  # doctest: +SKIP
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from . import distributed
from .cam_methods import CAM_METHODS, CamMethod, joint_group, make_cam_method, make_joint_method
from .config import Config
from .datasets import build_dataset, collate
from .diagnostics import PathologyMeter
from .io import replace_dir, save_json
from .mapfile import load_map, map_path, save_map
from .metrics import CamEvaluator
from .models import load_classifier
from .progress import tqdm
from .runtime import pick_device
from .transforms import eval_transform

if TYPE_CHECKING:
    from .store import RunStore

__all__ = ["evaluate_cams", "run", "save_cams"]


def save_cams(
    method: CamMethod,
    dataset,
    out: str | Path | dict[str, Path],
    device: torch.device,
    batch_size: int = 32,
    progress: bool = True,
) -> int:
    """Compute ``method``'s maps for every image of ``dataset`` and save them in ``out``.

    ``out`` is one folder, or for a method that makes several maps in one pass
    (:class:`cpmc_lib.cam_methods.JointCpmcCam`, whose call gives (B, M, K-1, H, W)) a dict of M folders
    in the order of its maps. Images of equal size are batched; different sizes (VOC) run one at a
    time. Returns the count.
    """
    folders = list(out.values()) if isinstance(out, dict) else [Path(out)]
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    n = 0
    desc = "cams " + "+".join(f.name for f in folders)
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        imgs, labels = batch["img"], batch["label"]
        if isinstance(imgs, list):  # sizes differ: one image at a time
            cams = [
                method(x[None].to(device), y[None].to(device))[0].cpu()
                for x, y in zip(imgs, labels, strict=True)
            ]
        else:
            cams = method(imgs.to(device), labels.to(device)).cpu()
        for name, cam, label in zip(batch["name"], cams, labels, strict=True):
            keys = label.nonzero().flatten()
            parts = cam if cam.dim() == 4 else cam[None]  # (M, K-1, H, W)
            for folder, part in zip(folders, parts, strict=True):
                save_map(folder, name, (keys + 1).numpy(), part[keys].numpy())
            n += 1
    return n


def evaluate_cams(folder: str | Path, dataset, num_classes: int, step: float = 0.05) -> dict[str, Any]:
    """Score saved maps: best-threshold mIoU (threshold sweep) and, with diagnostics, pathologies.

    Args:
        folder: the method's folder of map files (:mod:`cpmc_lib.mapfile`).
        dataset: the split's dataset; its masks and, if present, diagnostic codes are read with
            :meth:`~cpmc_lib.datasets.SegmentationDataset.targets`.

    Returns:
        :meth:`~cpmc_lib.metrics.CamEvaluator.compute`'s dict, plus ``pathology``
        (:meth:`~cpmc_lib.diagnostics.PathologyMeter.compute` at the best threshold) when the
        dataset has diagnostic masks.
    """
    folder = Path(folder)
    evaluator = CamEvaluator(num_classes, step=step)
    has_diag = False
    for name in dataset.names:
        mask, diag = dataset.targets(name)  # the masks only: the image is not needed
        has_diag |= diag is not None
        if mask is None:  # an image without a mask (VOC's train_aug beyond train) scores nothing
            continue
        saved = load_map(folder, name)
        try:
            evaluator.update(saved.cam.astype(np.float32), saved.keys, mask)
        except ValueError as e:  # name the image: e.g. NaN maps of a diverged classifier
            raise ValueError(f"{map_path(folder, name)}: {e}") from None
    metrics = evaluator.compute()
    if has_diag:
        meter = PathologyMeter(metrics["threshold"])
        for name in dataset.names:
            mask, diag = dataset.targets(name)
            if mask is None or diag is None:
                continue
            saved = load_map(folder, name)
            meter.update(saved.cam.astype(np.float32), saved.keys, mask, diag)
        metrics["pathology"] = meter.compute()
    return metrics


def run(
    cfg: Config, store: RunStore, method: str = "cam", progress: bool = True, seg_split: bool = False
) -> dict[str, Any]:
    """Stage "cams" for one method: maps of every ``cfg.data.cam_split`` image, saved and scored.

    Reads the run store's trained classifier (``python -m cpmc_lib train`` makes it). Reuses
    ``cams/<method>/`` if it holds this config's maps. Asked for a member of
    :data:`~cpmc_lib.cam_methods.JOINT_METHODS`, it also makes whichever of the others are
    missing, in the same pass (``made_with`` lists them).

    Args:
        seg_split: also map the seg-split images that the cam split lacks (unscored), for the pseudo labels.

    Returns:
        The metrics of :func:`evaluate_cams` plus ``method``, ``images``, ``seconds`` and ``folder``.
    """
    device = pick_device(cfg.device)
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; methods: {', '.join(CAM_METHODS)}")
    store.require("classifier", cfg, "trained classifier")
    # keep: other methods' folders survive a crash of this stage with the same config.
    # Under torchrun each rank maps its shard of the images (i % world == rank) into the shared
    # folder; rank 0 scores them all once every rank is done.
    with store.stage("cams", cfg, device=str(device), keep=tuple(CAM_METHODS)) as st:
        metrics = store.map_metrics(cfg, method, st.path)
        todo = [method]
        if metrics is None:  # the missing members of its group come almost free (in the group's order)
            todo = [m for m in joint_group(method) if m == method or store.map_metrics(cfg, m, st.path) is None]
        distributed.barrier()  # every rank has looked before rank 0 clears
        if metrics is None:
            made = _make_maps(cfg, store, st.path, todo, device, progress)
            metrics = made[method]
        else:
            made = {method: metrics}
        if not st.done:
            st.result = {
                **st.result,
                **{
                    m: {k: r[k] for k in ("miou", "threshold", "precision", "recall")}
                    for m, r in made.items()
                },
            }
    if seg_split:
        _map_seg_split(cfg, store, method, device, progress)
    return metrics


def _make_maps(
    cfg: Config, store: RunStore, stage_dir: Path, todo: list[str], device: torch.device, progress: bool
) -> dict[str, dict[str, Any]]:
    """Make the cam-split maps of the methods ``todo`` (one pass for a joint group) and score them.

    Each method's maps are written into ``.<method>.partial/`` in the stage folder, which replaces
    the method's folder (maps of other settings, if any) only once they are complete and scored.
    """
    start = time.perf_counter()
    folders = {m: stage_dir / f".{m}.partial" for m in todo}
    for folder in folders.values():
        if folder.exists() and distributed.is_main():  # the scratch of an interrupted pass
            shutil.rmtree(folder)
    distributed.barrier()
    model = load_classifier(store.path("classifier") / "model.pt", cfg).to(device)
    dataset = distributed.shard_dataset(build_dataset(cfg, cfg.data.cam_split, eval_transform()))
    if len(todo) > 1:
        cam_method = make_joint_method(todo, model, cfg)
    else:
        cam_method = make_cam_method(todo[0], model, cfg)
    n = save_cams(
        cam_method, dataset, folders if len(todo) > 1 else folders[todo[0]], device,
        cfg.cams.batch_size, progress and distributed.is_main(),
    )  # fmt: skip
    n = round(distributed.all_reduce_sum({"n": n})["n"])  # also waits for every rank's maps
    made = {}
    if distributed.is_main():
        raw = build_dataset(cfg, cfg.data.cam_split)  # masks only: skip the image normalisation
        for m, folder in folders.items():
            made[m] = evaluate_cams(folder, raw, cfg.data.num_classes, cfg.cams.thresholds_step)
        # seconds: the whole pass and its scoring, the same for every method made in it
        seconds = round(time.perf_counter() - start, 1)
        for m, folder in folders.items():
            made[m].update(
                method=m, method_hash=store.method_key(cfg, m), images=n, made_with=todo,
                seconds=seconds, folder=str(stage_dir / m),
            )  # fmt: skip
            save_json(folder / "metrics.json", made[m])  # written last: present means complete
            replace_dir(folder, stage_dir / m)
    return distributed.broadcast_object(made)


def _map_seg_split(cfg: Config, store: RunStore, method: str, device: torch.device, progress: bool) -> None:
    """Maps of the seg-split images that the cam split lacks, for the pseudo labels; not scored.

    Nothing is made when the seg split is the cam split, or when ``seg_split.json`` says the maps exist.
    """
    if store.has_seg_maps(cfg, method):
        return
    with store.writing():  # adds the maps of the other images to the method's finished folder
        _map_rest(cfg, store, method, device, progress)


def _map_rest(cfg: Config, store: RunStore, method: str, device: torch.device, progress: bool) -> None:
    folder = store.maps_dir(method)
    mapped = set(build_dataset(cfg, cfg.data.cam_split).names)
    ds = build_dataset(cfg, cfg.seg_split(), eval_transform())
    todo = Subset(ds, [i for i, name in enumerate(ds.names) if name not in mapped])
    model = load_classifier(store.path("classifier") / "model.pt", cfg).to(device)
    n = save_cams(
        make_cam_method(method, model, cfg), distributed.shard_dataset(todo), folder, device,
        cfg.cams.batch_size, progress and distributed.is_main(),
    )  # fmt: skip
    n = round(distributed.all_reduce_sum({"n": n})["n"])  # also waits for every rank's maps
    if distributed.is_main():  # written last: present means complete
        result = {"seg_split": cfg.seg_split(), "images": len(ds), "made": n}
        save_json(folder / "seg_split.json", {"key": store.seg_maps_key(cfg, method), "result": result})
    distributed.barrier()
