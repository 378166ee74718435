"""Measure what the pretraining stage (the ImageNet stand-in) changes: one table, with and without.

For each variant it runs (or reuses, through the run store) the classifier and the "cam" and
"proto" CAM methods on the config's benchmark, and prints classifier CAM mIoU, prototype CAM mIoU,
classifier val mAP and the time of each stage. "with" first runs stage "pretrain" and passes its
weights through ``classifier.weights``, the path a user with real ImageNet weights takes.

The baseline is reused from ``--reuse`` runs (``default`` by default) when their "cams" stage
finished with the identical config hash (the hash ignores the run name); otherwise it is computed
as run ``<prefix>_off``.

Usage::

    python benchmarks/measure_pretrain.py                         # data/synth, seed 0
    python benchmarks/measure_pretrain.py --set pretrain.epochs=6 --prefix pretrain_e6
    python benchmarks/measure_pretrain.py --json results.json --threads 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from cpmc_lib import pipeline, pretrain
from cpmc_lib.config import Config, load_config
from cpmc_lib.store import RunStore, stage_hash

METHODS = ("cam", "proto")


def _reusable(cfg: Config, runs: list[str]) -> Config | None:
    """A config naming a finished run among ``runs`` whose cams stage has ``cfg``'s hash and every method."""
    for name in runs:
        other = cfg.replace(run=name)
        store = RunStore.for_config(other)
        if store.is_done("cams", stage_hash(other, "cams")) and all(
            (store.path("cams") / m / "metrics.json").is_file() for m in METHODS
        ):
            return other
    return None


def measure(cfg: Config, progress: bool) -> dict[str, Any]:
    """Classifier and CAM metrics of ``cfg`` (computed or reused), with stage times in seconds."""
    row: dict[str, Any] = {"run": cfg.run}
    for m in METHODS:
        metrics = pipeline.ensure(cfg, "cams", method=m, progress=progress)
        row[f"{m}_miou"], row[f"{m}_seconds"] = metrics["miou"], metrics["seconds"]
    clf = RunStore.for_config(cfg).result("classifier")
    row["val_mAP"], row["classifier_seconds"] = clf["val_mAP"], clf["seconds"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides, key=value")
    parser.add_argument("--prefix", default="pretrain", help="runs <prefix>_on and <prefix>_off")
    parser.add_argument("--reuse", nargs="*", default=["default"], help="runs whose baseline may be reused")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--json", default="", help="also write the rows to this file")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    base = load_config(args.config, args.set).replace(**{"classifier.weights": ""})
    off = base.replace(run=f"{args.prefix}_off")
    rows = [{"variant": "without", "pretrain_seconds": 0.0, "source_acc": None}]
    rows[0].update(measure(_reusable(off, args.reuse) or off, args.progress))

    on = base.replace(run=f"{args.prefix}_on")
    pre = pretrain.run(on, progress=args.progress)
    on = on.replace(**{"classifier.weights": pre["weights"]})
    rows.append({"variant": "with", "pretrain_seconds": pre["seconds"], "source_acc": pre["accuracy"]})
    rows[1].update(measure(on, args.progress))

    print("| pretraining | source acc | pretrain s | classifier s | val mAP | CAM mIoU | proto mIoU | run |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        acc = "-" if r["source_acc"] is None else f"{r['source_acc']:.1f}"
        print(
            f"| {r['variant']} | {acc} | {r['pretrain_seconds']:.0f} | {r['classifier_seconds']:.0f} "
            f"| {r['val_mAP']:.1f} | {r['cam_miou']:.1f} | {r['proto_miou']:.1f} | {r['run']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
