"""Where the gap between weak and full supervision sits, measured on a finished run.

On a run whose two segmentation stages have finished (``make book`` or ``python -m cpmc_lib pipeline``):

1. **Test-time options** (``segmentation.test_flip``, ``test_scales``, ``test_crf``): both networks
   scored on val with the flipped image, three scales, and the dense CRF. They lift both networks;
   the question is whether they lift the weak one more.
2. **Oracle diagnostic** (``--oracle-fix class``, ``missed``, ``background``, ``context`` or
   ``distractor``, never a method): the labels with one kind of error set to the ground truth
   (:func:`cpmc_lib.diagnostics.oracle_fixed_label`) - body given to another present class, body
   labelled background or ignored, background labelled object, or only its context or distractor
   pixels - and a network trained on them: how much of the gap that kind of label error costs.
   Trains one network, then stops.

Two label rules once measured here (ignoring the pixels the CRF relabelled; Khoreva et al.'s
self-training) moved the network by no more than it moves between epochs and were retired; their
last measurement is ``papermill_runs/records/retired_gap.json``.

On the synthetic benchmark it first prints which kinds of pixel (body, atypical body, context, ...)
the run's pseudo labels and both networks get wrong. ``--by-class`` prints only the same split by
class (:func:`cpmc_lib.report.class_table`) and stops: it works on runs older than the per-class
keys of ``metrics.json``. Nothing is written into the run: the labels and the network of (2) live in a
temporary folder.

Usage::

    python benchmarks/weak_full_gap.py --config configs/default.yaml [--set key=value] [--by-class]
    python benchmarks/weak_full_gap.py --set pseudo.assign=argmax --oracle-fix class  # the arg-max labels
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from cpmc_lib import report, segmentation
from cpmc_lib.config import load_config
from cpmc_lib.datasets import build_dataset
from cpmc_lib.diagnostics import ORACLE_FIXES, LabelPathologyMeter, oracle_fixed_label
from cpmc_lib.io import read_mask_png, save_mask_png
from cpmc_lib.pipeline import ensure_data
from cpmc_lib.runtime import pick_device
from cpmc_lib.store import RunStore
from cpmc_lib.transforms import eval_transform

TEST_OPTIONS = {"plain": ((1.0,), False), "flip": ((1.0,), True), "3 scales + flip": ((0.75, 1.0, 1.25), True)}


def test_time_scores(cfg, store: RunStore, device: torch.device) -> dict[str, dict[str, dict]]:
    """Both networks' val scores (:func:`cpmc_lib.segmentation.evaluate`, with the CRF) per test-time
    option, each printed as a Markdown row as it finishes: ``{option: {"weak": .., "full": ..}}``."""
    val = build_dataset(cfg, cfg.data.val_split, eval_transform())
    nets = {k: segmentation.load_segnet(cfg, store.path(s) / "model.pt", device)
            for k, s in (("weak", "segmentation"), ("full", "segmentation_gt"))}  # fmt: skip
    out = {}
    for name, (scales, flip) in TEST_OPTIONS.items():
        r = out[name] = {k: segmentation.evaluate(net, val, device, cfg.data.num_classes, scales, flip, cfg.crf,
                                                  progress=False) for k, net in nets.items()}  # fmt: skip
        w, f, wc, fc = r["weak"]["miou"], r["full"]["miou"], r["weak"]["miou_crf"], r["full"]["miou_crf"]
        print(f"| {name} | {w:.1f} | {f:.1f} | {100 * w / f:.1f} | {wc:.1f} | {fc:.1f} | {100 * wc / fc:.1f} |", flush=True)
    return out


def stage_label_pathology(cfg, store: RunStore) -> LabelPathologyMeter:
    """:class:`~cpmc_lib.diagnostics.LabelPathologyMeter` over the pseudo stage's saved labels (empty
    without diagnostic masks)."""
    folder = store.require("pseudo", cfg, "pseudo labels") / "labels"
    ds, meter = build_dataset(cfg, cfg.seg_split()), LabelPathologyMeter()
    for name in ds.names:
        mask, diag = ds.targets(name)
        if mask is not None and diag is not None:
            meter.update(read_mask_png(folder / f"{name}.png"), mask, diag)
    return meter


def class_breakdown(cfg, store: RunStore, device: torch.device) -> str:
    """:func:`cpmc_lib.report.class_gap` and :func:`~cpmc_lib.report.class_table` of a finished run:
    the saved pseudo labels and both networks scored per class on val (plain test time)."""
    val = build_dataset(cfg, cfg.data.val_split, eval_transform())
    scores = {k: segmentation.evaluate(segmentation.load_segnet(cfg, store.path(s) / "model.pt", device), val, device,
                                       cfg.data.num_classes, progress=False)
              for k, s in (("weak", "segmentation"), ("full", "segmentation_gt"))}  # fmt: skip
    labels = stage_label_pathology(cfg, store)
    names, weak, full = val.class_names, scores["weak"], scores["full"]
    groups = report.body_groups(ensure_data(cfg, progress=False))
    by_class = labels.compute_by_class() if labels.pixels else None
    table = report.class_table(names, by_class, weak.get("pathology_by_class"), weak["iou"], full["iou"], groups)
    return f"{report.class_gap(names, weak['iou'], full['iou'])}\n\n{table}"


def oracle_fixed_labels(cfg, store: RunStore, out: Path, kind: str) -> dict[str, float]:
    """ORACLE DIAGNOSTIC, never a method: the stage's pseudo labels with one kind of error set to the
    ground truth (:func:`cpmc_lib.diagnostics.oracle_fixed_label`), saved as PNGs into ``out``.

    Needs the benchmark's diagnostic masks. Returns ``changed``, the changed share (%) of the pixels
    of that kind (body and atypical body, background, context or distractor), and ``of``, which
    pixels those are.
    """
    labels = store.require("pseudo", cfg, "pseudo labels") / "labels"
    ds = build_dataset(cfg, cfg.seg_split())
    changed = total = 0
    for name in ds.names:
        gt, diag = ds.targets(name)
        if diag is None:
            raise SystemExit(f"--oracle-fix needs the benchmark's diagnostic masks; {name} has none")
        fixed, fix, region = oracle_fixed_label(read_mask_png(labels / f"{name}.png"), gt, diag, kind)
        save_mask_png(out / f"{name}.png", fixed)
        changed, total = changed + int(fix.sum()), total + int(region.sum())
    of = kind if kind in ("context", "distractor") else "background" if kind == "background" else "body"
    return {"changed": 100 * changed / max(total, 1), "of": of}


def _retrain(cfg, store: RunStore, device: torch.device, labels: Path, out: Path, found: dict) -> None:
    """Train the run's segmentation network on ``labels`` and print it beside the stage's network,
    then which pixels the labels (``found["pathology"]``) and the new network get right."""
    init = None
    if cfg.segmentation_uses_pretrain_stage():
        init = store.require("pretrain", cfg, "pretrained backbone") / "weights.pt"
    r = segmentation.train(cfg, out, device, labels, progress=False, init=init)
    base = store.result("segmentation")
    full = store.result("segmentation_gt")["val_miou"]
    print(f"network on them: {r['val_miou']:.1f} val mIoU (curve {' -> '.join(f'{v:.1f}' for v in r['curve'])}); "
          f"on the stage's pseudo labels: {base['val_miou']:.1f} ({r['val_miou'] - base['val_miou']:+.1f}); "
          f"weak / full {100 * r['val_miou'] / full:.1f} % against {100 * base['val_miou'] / full:.1f} %")  # fmt: skip
    table = report.error_table(found.get("pathology"), r.get("val_pathology"), None)
    if table:
        print(f"\n{table}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--by-class", action="store_true", help="only the per-class table of the run, then stop")
    ap.add_argument("--oracle-fix", choices=sorted(ORACLE_FIXES), help="only this ORACLE diagnostic, then stop: "
                    "a network trained on the labels with that kind of error set to the ground truth")  # fmt: skip
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    store, device = RunStore.for_config(cfg), pick_device(cfg.device)
    store.require("segmentation", cfg, "the network trained on pseudo labels")
    store.require("segmentation_gt", cfg, "the network trained on ground truth")
    print(f"run {store.root}, device {device}\n")
    if args.by_class:
        print(class_breakdown(cfg, store, device))
        return
    if args.oracle_fix:
        with tempfile.TemporaryDirectory() as tmp:
            labels = Path(tmp) / "fixed"
            labels.mkdir()
            found = oracle_fixed_labels(cfg, store, labels, args.oracle_fix)
            print(f"ORACLE diagnostic, {ORACLE_FIXES[args.oracle_fix]} set to the ground truth: "
                  f"{found['changed']:.1f} % of the {found['of']} pixels changed")  # fmt: skip
            _retrain(cfg, store, device, labels, Path(tmp) / "net-oracle", {})
        return
    print("| test time | weak | full | weak / full (%) | weak + CRF | full + CRF | weak / full + CRF (%) |")
    print("|---|---|---|---|---|---|---|")
    scores = test_time_scores(cfg, store, device)
    plain = scores["plain"]
    if "pathology" in plain["weak"]:  # the synthetic benchmark: which kinds of pixel each gets wrong
        weak, full = plain["weak"]["pathology"], plain["full"]["pathology"]
        labels = stage_label_pathology(cfg, store)
        table = report.error_table(labels.compute() if labels.pixels else {}, weak, full)
        print(f"\n{table}\n\n{report.error_gap(weak, full)}")


if __name__ == "__main__":
    main()
