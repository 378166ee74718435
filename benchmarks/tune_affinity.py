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

from cpmc_lib import affinity, pseudo, report
from cpmc_lib.config import load_config
from cpmc_lib.datasets import build_dataset
from cpmc_lib.runtime import pick_device
from cpmc_lib.store import RunStore


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
    device = pick_device(cfg.device)
    backbone = affinity.frozen_backbone(cfg, store, device)
    head = affinity.load_head(cfg, store, backbone, device)
    print(
        f"{len(names)} images of {cfg.data.cam_split}, rule {cfg.pseudo.threshold_rule}, run {store.root}\n"
    )
    print(
        "| walk | labels mIoU | + CRF | body recall | atypical recall | context labelled object | distractor labelled object |"
    )
    print("|---|---|---|---|---|---|---|")
    source = store.path("cams") / cfg.pseudo.method
    parts = pseudo.part_folder(cfg, store)  # the stage's class assignment (pseudo.assign)
    plain = pseudo.make_labels(cfg, source, None, limit=len(names), progress=False, part_folder=parts)
    print(report.label_row("no walk", plain), flush=True)
    for beta, steps in itertools.product(args.beta, args.steps):
        with tempfile.TemporaryDirectory() as tmp:
            affinity.walk_folder(
                cfg, head, backbone, source, names, Path(tmp), device, beta, steps, progress=False
            )
            r = pseudo.make_labels(cfg, Path(tmp), None, limit=len(names), progress=False, part_folder=parts)
        print(report.label_row(f"beta {beta:g}, {steps} steps", r), flush=True)


if __name__ == "__main__":
    main()
