"""Tune the random walk of the affinity stage: pseudo-label scores for a grid of (beta, steps).

The affinity head is trained once by the stage (``python -m cpmc_lib pseudo --set
affinity.enabled=true``); the walk's power ``beta`` and its number of steps only change how far the
maps flow, so this script re-walks the first ``--limit`` images of the cam split with the run's
trained head for every pair of the grid, labels them as the pseudo stage does (the config's
ground-truth-free background rule, then the dense CRF) and scores them. Nothing is written into the
run; the walked maps go to a temporary folder. Tune on the tuning seed only; the row ``no walk``
scores the unwalked maps the same way.

Usage::

    python benchmarks/tune_affinity.py --config configs/default.yaml --limit 500
    python benchmarks/tune_affinity.py --beta 4 8 16 --steps 4 8 16 32
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np
import torch

from cpmc_lib import affinity, pseudo
from cpmc_lib.config import load_config
from cpmc_lib.datasets import build_dataset
from cpmc_lib.io import atomic_write
from cpmc_lib.models import load_classifier
from cpmc_lib.runtime import channels_last, pick_device, to_device
from cpmc_lib.store import RunStore
from cpmc_lib.transforms import eval_transform

COLUMNS = ("recall_body", "recall_atypical", "fp_context", "fp_distractor")


def walk_folder(cfg, store, names, out: Path, beta: float, steps: int) -> None:
    """Walk the pseudo-label method's maps of ``names`` into ``out`` with the run's trained head."""
    device = pick_device(cfg.device)
    backbone = channels_last(load_classifier(store.path("classifier") / "model.pt", cfg), device).eval()
    head = affinity.AffinityHead(
        backbone.backbone.feature_info.channels(), cfg.affinity.width, cfg.affinity.dim
    )
    head.load_state_dict(
        torch.load(store.path("affinity") / "model.pt", map_location="cpu", weights_only=True)
    )
    head = head.to(device).eval()
    ds = build_dataset(cfg, cfg.data.cam_split, eval_transform())
    index = {n: i for i, n in enumerate(ds.names)}
    offsets = affinity.neighbour_offsets(cfg.affinity.radius)
    source = store.path("cams") / cfg.pseudo.method
    for name in names:
        saved = np.load(source / f"{name}.npy", allow_pickle=True).item()
        cams = torch.from_numpy(saved["cam"].astype(np.float32)).to(device)
        img = to_device(ds[index[name]]["img"][None], device)
        walked = affinity.walk_maps(
            head, backbone, img, cams, offsets, beta, steps, cfg.affinity.stride
        ).cpu()
        with atomic_write(out / f"{name}.npy", "wb") as f:
            np.save(f, {"keys": saved["keys"], "cam": walked.numpy().astype(np.float16)}, allow_pickle=True)


def row(label: str, r: dict) -> str:
    p = r.get("pathology_crf", {})
    cells = [f"{r['miou']:.1f}", f"{r['miou_crf']:.1f}", *(f"{p[k]:.1f}" if k in p else "" for k in COLUMNS)]
    return f"| {label} | " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--set", action="append", default=[], help="config override, e.g. seed=2 (repeatable)")
    ap.add_argument("--limit", type=int, default=500, help="first images of the cam split (0 = all)")
    ap.add_argument("--beta", type=float, nargs="+", default=[4.0, 8.0, 16.0])
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 32])
    args = ap.parse_args(argv)
    cfg = load_config(args.config, [*args.set, "affinity.enabled=true"])
    store = RunStore.for_config(cfg)
    store.require("affinity", cfg, "trained affinity head")
    names = build_dataset(cfg, cfg.data.cam_split).names
    names = names[: args.limit] if args.limit else names
    print(
        f"{len(names)} images of {cfg.data.cam_split}, rule {cfg.pseudo.threshold_rule}, run {store.root}\n"
    )
    print(
        "| walk | labels mIoU | + CRF | body recall | atypical recall | context labelled object | distractor labelled object |"
    )
    print("|---|---|---|---|---|---|---|")
    plain = pseudo.make_labels(
        cfg, store.path("cams") / cfg.pseudo.method, None, limit=len(names), progress=False
    )
    print(row("no walk", plain), flush=True)
    for beta, steps in itertools.product(args.beta, args.steps):
        with tempfile.TemporaryDirectory() as tmp:
            walk_folder(cfg, store, names, Path(tmp), beta, steps)
            r = pseudo.make_labels(cfg, Path(tmp), None, limit=len(names), progress=False)
        print(row(f"beta {beta:g}, {steps} steps", r), flush=True)


if __name__ == "__main__":
    main()
