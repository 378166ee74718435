"""Probe: do the classifier CAMs of *absent* classes cover the body the present class's map misses?

On the synthetic benchmark the classes of a body group share their body, and the per-class table of
chapter 8 (``weak_full_gap.py --by-class``) shows some classes whose pseudo labels miss that body.
This script asks two questions of a finished run's classifier and pseudo labels, on the first
``--images`` images of the cam split. Ground truth and the diagnostic masks are read only to score.

1. Mean activation, relative to each map's own peak, of the present class's classifier CAM and of
   the highest *absent* class's CAM, on each class's body pixels and on distractor, context and
   neutral background pixels.
2. A completion rule that reads no ground truth: unlabelled pixels (background or ignored) where the
   highest absent-class CAM exceeds ``tau``, connected to a present class's labelled pixels through
   such pixels (:func:`cpmc_lib.calibration.attached_to`), take that class. Printed: the labels'
   mIoU on labelled pixels, body recall per class and the background labelled object, before and
   after, for each ``tau``.

The rule is a probe, not part of the pipeline. Usage::

    python benchmarks/absent_class_probe.py --config configs/default.yaml [--set key=value] [--images 300]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from cpmc_lib import report
from cpmc_lib.calibration import attached_to
from cpmc_lib.config import load_config
from cpmc_lib.datasets import build_dataset
from cpmc_lib.diagnostics import LabelPathologyMeter
from cpmc_lib.io import IGNORE_INDEX, read_mask_png
from cpmc_lib.metrics import ConfusionMeter
from cpmc_lib.models import load_classifier
from cpmc_lib.refinement import max_normalize
from cpmc_lib.store import RunStore
from cpmc_lib.synth import BODY, CONTEXT_PRESENT, DISTRACTOR, NEUTRAL
from cpmc_lib.transforms import eval_transform


@torch.no_grad()
def class_maps(model, img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(K-1, H, W) classifier CAMs of every class, each max-normalised to its own peak."""
    cam = F.interpolate(F.relu(model(img[None])["cam"]), size=size, mode="bilinear", align_corners=False)
    return max_normalize(cam)[0]


def complete(label: np.ndarray, absent: torch.Tensor, present: list[int], tau: float) -> np.ndarray:
    """Unlabelled pixels (0 or 255) where ``absent > tau``, attached to class c's labelled pixels, take c."""
    out = label.copy()
    free = torch.from_numpy((label == 0) | (label == IGNORE_INDEX)) & (absent > tau)
    for c in present:
        grown = attached_to(free[None, None], torch.from_numpy(out == c)[None, None])[0, 0].numpy()
        out[grown & ((out == 0) | (out == IGNORE_INDEX))] = c
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--taus", type=float, nargs="+", default=[0.3, 0.4, 0.5])
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    store = RunStore.for_config(cfg)
    model = load_classifier(store.require("classifier", cfg, "classifier") / "model.pt", cfg).eval()
    labels_dir = store.require("pseudo", cfg, "pseudo labels") / "labels"
    ds = build_dataset(cfg, cfg.data.cam_split, eval_transform())
    names, K = ds.class_names, cfg.data.num_classes
    act = {}  # (row name, "present" | "absent") -> [sum, pixels]
    rows = {"before": None, **{f"tau {t}": t for t in args.taus}}
    meters = {r: (ConfusionMeter(K), LabelPathologyMeter()) for r in rows}
    for i in range(min(args.images, len(ds))):
        s = ds[i]
        gt, diag = s["mask"].numpy().astype(np.int64), s["diag"].numpy().astype(np.int64)
        cam = class_maps(model, s["img"], gt.shape)
        here = s["label"].bool()
        absent = cam[~here].amax(0) if (~here).any() else torch.zeros(gt.shape)
        where = {names[c]: (diag == BODY) & (gt == c) for c in range(1, K)}
        where.update({"distractor": diag == DISTRACTOR, "context": diag == CONTEXT_PRESENT, "neutral": diag == NEUTRAL})
        for row, m in where.items():
            c = names.index(row) if row in names else 0
            for kind, a in (("present", cam[c - 1] if c else None), ("absent", absent)):
                if a is not None and m.any():
                    total = act.setdefault((row, kind), [0.0, 0])
                    total[0], total[1] = total[0] + float(a.numpy()[m].sum()), total[1] + int(m.sum())
        label = read_mask_png(labels_dir / f"{s['name']}.png").astype(np.int64)
        present = [c for c in range(1, K) if here[c - 1]]
        for r, tau in rows.items():
            lab = label if tau is None else complete(label, absent, present, tau)
            keep = lab != IGNORE_INDEX
            meters[r][0].update(np.where(keep, lab, 0), np.where(keep, gt, IGNORE_INDEX))
            meters[r][1].update(lab, gt, diag)
    n = min(args.images, len(ds))
    print(f"run {store.root}, first {n} images of {cfg.data.cam_split}\n")
    order = [*names[1:], "distractor", "context", "neutral"]  # class bodies, then background kinds
    table = [{"pixels": row if row in names else f"({row})",
              **{kind: act[(row, kind)][0] / act[(row, kind)][1] for kind in ("present", "absent") if (row, kind) in act}}
             for row in order if (row, "absent") in act]  # fmt: skip
    print("*Mean classifier CAM (fraction of its peak) on each class's body and on background kinds: the "
          "present class's own map, the highest absent class's:*\n")  # fmt: skip
    print(report.markdown_table(table, ["pixels", "present", "absent"], digits=2) + "\n")
    out = []
    for r, (conf, patho) in meters.items():
        by_class, pooled = patho.compute_by_class(), patho.compute()
        out.append({"labels": r, "mIoU (labelled px)": conf.compute()["miou"],
                    **{names[int(c)]: v.get("recall_body") for c, v in by_class.items()},
                    **{f"{k} as object": pooled[f"fp_{k}"] for k in ("distractor", "context", "neutral")}})  # fmt: skip
    print("*The stage's pseudo labels before and after the completion rule: body recall per class (%), "
          "background labelled object (%):*\n")  # fmt: skip
    print(report.markdown_table(out, list(out[0])))


if __name__ == "__main__":
    main()
