"""Cheap ways to close the gap between weak and full supervision, measured on a finished run.

The first three are common in WSSS code; this script measures whether they move weak / full on a run whose
two segmentation stages have finished (``make book`` or ``python -m cpmc_lib pipeline``):

1. **Test-time options** (``segmentation.test_flip``, ``test_scales``, ``test_crf``): both networks
   scored on val with the flipped image, three scales, and the dense CRF. They lift both networks;
   the question is whether they lift the weak one more.
2. **Ignore where the CRF changed the label** (``--agree``): pseudo labels whose pixels the dense
   CRF relabelled are set to 255 (ignored), a ground-truth-free confidence rule; a network is then
   trained on them with the run's schedule and compared with the stage's network. Needs the pseudo
   stage's CRF labels (``pseudo.crf: true``, the default). Trains one network (minutes on a CPU).
3. **Self-training** (``--self-train``, Khoreva et al.'s recursive training): the network trained
   on pseudo labels relabels its own training images (softmax with the flipped image, classes
   outside the image label set to zero, then the dense CRF), and a second network is trained on
   those labels with the same schedule. Reads no ground truth. Trains one network.
4. **Oracle diagnostic** (``--oracle-fix class``, ``missed``, ``background``, ``context`` or
   ``distractor``, never a method): the labels with one kind of error set to the ground truth - body
   given to another present class, body labelled background or ignored, background labelled object,
   or only its context or distractor pixels - and a network trained on
   them: how much of the gap that kind of label error costs. Trains one network, then stops.

On the synthetic benchmark it first prints which kinds of pixel (body, atypical body, context, ...)
the run's pseudo labels and both networks get wrong. ``--by-class`` prints only the same split by
class (:func:`cpmc_lib.report.class_table`) and stops: it works on runs older than the per-class
keys of ``metrics.json``. Nothing is written into the run: the labels and the networks of (2) and (3) live in a temporary
folder.

Usage::

    python benchmarks/weak_full_gap.py --config configs/default.yaml [--set key=value] [--agree] [--by-class]
    python benchmarks/weak_full_gap.py --set pseudo.assign=argmax --oracle-fix class  # the arg-max labels
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from cpmc_lib import pseudo, report, segmentation
from cpmc_lib.config import load_config
from cpmc_lib.crf import crf_map
from cpmc_lib.datasets import build_dataset, collate
from cpmc_lib.diagnostics import LabelPathologyMeter
from cpmc_lib.io import IGNORE_INDEX, read_mask_png, save_mask_png
from cpmc_lib.metrics import ConfusionMeter
from cpmc_lib.pipeline import ensure_data
from cpmc_lib.runtime import pick_device
from cpmc_lib.store import RunStore
from cpmc_lib.synth import ATYPICAL, BODY, CONTEXT_ABSENT, CONTEXT_PRESENT, DISTRACTOR
from cpmc_lib.transforms import denormalize, eval_transform

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


def agreement_labels(cfg, store: RunStore, out: Path) -> dict[str, float]:
    """Pseudo labels with the pixels the CRF relabelled set to 255, saved as PNGs into ``out``.

    Returns:
        their mIoU over labelled pixels, the ignored fraction, and their label pathology.
    """
    p = cfg.pseudo
    if not p.crf or p.threshold_rule == "oracle":
        raise SystemExit("--agree needs the pseudo stage's CRF labels (pseudo.crf: true) and a GT-free rule")
    crf_dir = store.require("pseudo", cfg, "pseudo labels") / "labels"
    cams = store.path("cams") / p.method
    ds = build_dataset(cfg, cfg.seg_split())
    parts = pseudo.part_folder(cfg, store)  # the stage's class assignment, on both labels alike
    meter, patho, ignored, pixels = ConfusionMeter(cfg.data.num_classes), LabelPathologyMeter(), 0, 0
    for name in ds.names:
        saved = np.load(cams / f"{name}.npy", allow_pickle=True).item()
        cam, keys = saved["cam"].astype(np.float32), saved["keys"]
        thr = pseudo.image_threshold(cam, p.threshold_rule, p.bg_threshold)
        plain = pseudo._part_assigner(parts, name, cam, keys, thr, p)(pseudo.pseudo_label(cam, keys, thr))
        crf = read_mask_png(crf_dir / f"{name}.png")
        label = np.where(plain == crf, crf, IGNORE_INDEX).astype(np.uint8)
        save_mask_png(out / f"{name}.png", label)
        ignored, pixels = ignored + int((label == IGNORE_INDEX).sum()), pixels + label.size
        gt, diag = ds.targets(name)
        if gt is not None:  # scored only: the labels never read it
            gt, lab = gt.astype(np.int64), label.astype(np.int64)
            keep = lab != IGNORE_INDEX
            meter.update(torch.from_numpy(np.where(keep, lab, 0)), torch.from_numpy(np.where(keep, gt, IGNORE_INDEX)))
            if diag is not None:
                patho.update(lab, gt, diag)
    return {"miou": meter.compute()["miou"], "ignored": 100 * ignored / max(pixels, 1),
            "pathology": patho.compute() if patho.pixels else {}}  # fmt: skip


ORACLE_FIXES = {
    "class": "object body given to another present class",
    "missed": "object body labelled background or ignored",
    "background": "background (context, distractor, neutral) labelled object",
    "context": "context background (of a present or an absent class) labelled object",
    "distractor": "distractor (a body without its part) labelled object",
}
# Which background pixels each false-positive kind fixes (diagnostic codes of cpmc_lib.synth).
FP_REGIONS = {"context": (CONTEXT_PRESENT, CONTEXT_ABSENT), "distractor": (DISTRACTOR,)}


def oracle_fixed_labels(cfg, store: RunStore, out: Path, kind: str) -> dict[str, float]:
    """ORACLE DIAGNOSTIC, never a method: the stage's pseudo labels with one kind of error
    (:data:`ORACLE_FIXES`) set to the ground truth, saved as PNGs into ``out``. ``class`` and
    ``missed`` fix body and atypical-body pixels (false negatives), ``background`` fixes background
    pixels labelled object (false positives; ignored background stays ignored), ``context`` and
    ``distractor`` only the background pixels of that diagnostic kind (:data:`FP_REGIONS`).

    A network trained on them says how much of the weak / full gap that kind of label error costs.
    Needs the benchmark's diagnostic masks. Returns ``changed``, the changed share (%) of the pixels
    of that kind (body and atypical body, background, context or distractor), and ``of``, which
    pixels those are.
    """
    labels = store.require("pseudo", cfg, "pseudo labels") / "labels"
    ds = build_dataset(cfg, cfg.seg_split())
    changed = total = 0
    for name in ds.names:
        label = read_mask_png(labels / f"{name}.png")
        gt, diag = ds.targets(name)
        if diag is None:
            raise SystemExit(f"--oracle-fix needs the benchmark's diagnostic masks; {name} has none")
        labelled = (label > 0) & (label != IGNORE_INDEX)
        if kind == "background":
            region = gt == 0
        elif kind in FP_REGIONS:
            region = (gt == 0) & np.isin(diag, FP_REGIONS[kind])
        else:
            region = (diag == BODY) | (diag == ATYPICAL)
        if kind == "class":
            fix = region & labelled & (label != gt)
        elif kind == "missed":
            fix = region & ~labelled
        else:
            fix = region & labelled
        save_mask_png(out / f"{name}.png", np.where(fix, gt, label).astype(np.uint8))
        changed, total = changed + int(fix.sum()), total + int(region.sum())
    of = kind if kind in FP_REGIONS else "background" if kind == "background" else "body"
    return {"changed": 100 * changed / max(total, 1), "of": of}


def self_training_labels(cfg, store: RunStore, device: torch.device, out: Path) -> dict[str, float]:
    """The stage's network on pseudo labels relabels the seg split; PNGs saved into ``out``.

    Per image: softmax of the image and its flip (:func:`cpmc_lib.segmentation.predict`), every
    class outside the image label set to zero (the only supervision WSSS has), the dense CRF over
    the rest. No ground truth is read to make them.

    Returns:
        their mIoU before and after the CRF and the label pathology after it (scored only).
    """
    net = segmentation.load_segnet(cfg, store.require("segmentation", cfg, "the network trained on pseudo labels")
                                   / "model.pt", device)  # fmt: skip
    ds = build_dataset(cfg, cfg.seg_split(), eval_transform())
    loader = DataLoader(ds, batch_size=cfg.segmentation.batch_size, collate_fn=collate)
    plain, after, patho = (ConfusionMeter(cfg.data.num_classes), ConfusionMeter(cfg.data.num_classes),
                           LabelPathologyMeter())  # fmt: skip

    def items():
        for batch in loader:
            imgs = batch["img"]
            if isinstance(imgs, list):  # sizes differ (VOC): one image at a time
                batch_probs = [segmentation.predict(net, x[None].to(device), flip=True)[0].cpu() for x in imgs]
            else:
                batch_probs = segmentation.predict(net, imgs.to(device), flip=True).cpu()
            for img, probs, label, name in zip(imgs, batch_probs, batch["label"], batch["name"], strict=True):
                keys = torch.cat([torch.zeros(1, dtype=torch.long), label.nonzero().flatten() + 1])
                probs = probs[keys] / probs[keys].sum(0, keepdim=True).clamp_min(1e-8)
                mask, diag = ds.targets(name)
                if mask is not None:  # scored only: the labels never read it
                    plain.update(keys[probs.argmax(0)], mask)
                yield denormalize(img).permute(1, 2, 0).numpy(), probs.numpy(), (name, keys, mask, diag)

    for post, (name, keys, mask, diag) in crf_map(items(), cfg.crf, progress=False):
        label = keys[post.argmax(0)].numpy().astype(np.uint8)
        save_mask_png(out / f"{name}.png", label)
        if mask is not None:
            after.update(label, mask)
            if diag is not None:
                patho.update(label, mask, diag)
    return {"miou": plain.compute()["miou"], "miou_crf": after.compute()["miou"],
            "pathology": patho.compute() if patho.pixels else {}}  # fmt: skip


def _retrain(cfg, store: RunStore, device: torch.device, labels: Path, out: Path, found: dict) -> None:
    """Train the run's segmentation network on ``labels`` and print it beside the stage's network,
    then which pixels the labels (``found["pathology"]``) and the new network get right."""
    init = None
    if cfg.segmentation_uses_pretrain_stage():
        init = store.require("pretrain", cfg, "pretrained backbone") / "weights.pt"
    r = segmentation.train(cfg, out, device, labels, progress=False, init=init)
    base = segmentation.run(cfg, store, labels="pseudo", progress=False)
    full = segmentation.run(cfg, store, labels="gt", progress=False)["val_miou"]
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
    ap.add_argument("--agree", action="store_true", help="also train a network on CRF-agreement labels")
    ap.add_argument("--self-train", action="store_true", help="also train a network on the weak network's own labels")
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
    with tempfile.TemporaryDirectory() as tmp:
        if args.agree:
            labels = Path(tmp) / "agree"
            labels.mkdir()
            found = agreement_labels(cfg, store, labels)
            print(f"\nCRF-agreement labels: {found['miou']:.1f} mIoU on labelled pixels, {found['ignored']:.1f} % ignored")
            _retrain(cfg, store, device, labels, Path(tmp) / "net-agree", found)
        if args.self_train:
            labels = Path(tmp) / "self"
            labels.mkdir()
            found = self_training_labels(cfg, store, device, labels)
            print(f"\nself-training labels: {found['miou']:.1f} mIoU, {found['miou_crf']:.1f} after the CRF "
                  f"(the stage's pseudo labels: {store.result('pseudo')['miou_crf']:.1f} after the CRF)")  # fmt: skip
            _retrain(cfg, store, device, labels, Path(tmp) / "net-self", found)


if __name__ == "__main__":
    main()
