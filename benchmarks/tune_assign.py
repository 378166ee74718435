"""Tune the part-anchored class assignment of the pseudo labels: scores for a grid of its two shares.

``pseudo.assign="parts"`` (:func:`cpmc_lib.labels.assign_to_parts`) gives each *contested* object
pixel - two or more present classes' maps above ``contest_share`` x the image's plane - to the class
whose part (its classifier CAM at ``part_share`` of the peak or more) lies nearest. This script
labels the first ``--limit`` images of the cam split as the pseudo stage does (the config's
ground-truth-free background rule, the band, the dense CRF) for the arg-max and for every pair of
the grid, and scores them against the ground truth. A body pixel given to a sibling class counts
as missed, so body recall is where the assignment shows. Nothing is written into the run. Tune on
the tuning seed only; the default (0.7, 0.5) is in the default grid.

Usage::

    python benchmarks/tune_assign.py --config configs/default.yaml --limit 300
    python benchmarks/tune_assign.py --part-share 0.5 0.7 0.9 --contest-share 0 0.5 1
"""

from __future__ import annotations

import argparse
import itertools

from cpmc_lib import labels, pseudo, report
from cpmc_lib.config import load_config
from cpmc_lib.store import RunStore


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--set", action="append", default=[], help="config override, e.g. seed=2 (repeatable)")
    ap.add_argument("--limit", type=int, default=300, help="first images of the cam split (0 = all)")
    ap.add_argument("--part-share", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    ap.add_argument("--contest-share", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.set)
    store = RunStore.for_config(cfg)
    folder, metrics = store.require_maps(cfg, cfg.pseudo.method)
    threshold = labels.rule_threshold(cfg, metrics)
    parts = pseudo.part_folder(cfg.replace(**{"pseudo.assign": "parts"}), store)
    print(f"first {args.limit or 'all'} images of {cfg.data.cam_split}, rule {cfg.pseudo.threshold_rule}, run {store.root}\n")
    print(
        "| assignment | labels mIoU | + CRF | body recall | atypical recall "
        "| context labelled object | distractor labelled object |"
    )
    print("|---|---|---|---|---|---|---|")
    plain = pseudo.make_labels(cfg, folder, threshold, limit=args.limit, progress=False)
    print(report.label_row("arg-max", plain), flush=True)
    for share, contest in itertools.product(args.part_share, args.contest_share):
        c = cfg.replace(**{"pseudo.part_share": share, "pseudo.contest_share": contest})
        r = pseudo.make_labels(c, folder, threshold, limit=args.limit, progress=False, part_folder=parts)
        print(report.label_row(f"parts, part share {share:g}, contest share {contest:g}", r), flush=True)


if __name__ == "__main__":
    main()
