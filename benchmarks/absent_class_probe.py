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

``--rule ring`` replaces the absent-class CAM of question 2 by a present class's own body evidence:
the part is where the class's classifier CAM is above ``--part`` of its peak (CAM grid), its *ring*
the cells just around it, which lie on the object's body since the part sits inside it. The ring's
mean hierarchical feature is a local prototype; pixels whose cosine similarity to it exceeds ``tau``
and that connect to the class's labelled pixels through such pixels take the class.

The rules are probes, not part of the pipeline. Usage::

    python benchmarks/absent_class_probe.py --config configs/default.yaml [--set key=value] [--images 300]
    python benchmarks/absent_class_probe.py --rule ring --taus 0.6 0.7 0.8
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


@torch.no_grad()
def ring_maps(
    model, img: torch.Tensor, label: torch.Tensor, size: tuple[int, int], part: float, background: float = 0.0
) -> torch.Tensor:
    """(K-1, H, W) cosine similarity of each present class's ring prototype to every pixel (0 elsewhere).

    The part: cells where the class's classifier CAM exceeds ``part`` x its peak; the ring: the cells
    8-adjacent to it; the prototype: the ring's mean hierarchical feature. ``background`` > 0: minus
    the similarity to the image's background prototype (the mean feature where every present class's
    CAM is below ``background`` x its peak).
    """
    out = model(img[None])
    cam = max_normalize(F.relu(out["cam"]))[0]  # (K-1, h, w)
    hie = F.normalize(out["hie"][0], dim=0)  # (D, h, w)
    sims = torch.zeros_like(cam)
    low = (cam * label[:, None, None]).amax(0) < background if background > 0 else None
    for k in torch.nonzero(label).flatten().tolist():
        core = (cam[k] > part).float()[None, None]
        ring = (F.max_pool2d(core, 3, stride=1, padding=1) - core)[0, 0].bool()
        if ring.any():
            proto = F.normalize(hie[:, ring].mean(1), dim=0)
            sims[k] = torch.einsum("d,dhw->hw", proto, hie)
            if low is not None and low.any():  # how much nearer the ring than the image's background
                sims[k] -= torch.einsum("d,dhw->hw", F.normalize(hie[:, low].mean(1), dim=0), hie)
    return F.interpolate(sims[None], size=size, mode="bilinear", align_corners=False)[0]


def complete(label: np.ndarray, score: torch.Tensor, present: list[int], tau: float) -> np.ndarray:
    """Unlabelled pixels (0 or 255) where ``score > tau``, attached to class c's labelled pixels, take c.

    ``score`` is one (H, W) map for every class, or (K-1, H, W) with class c's in channel c - 1.
    """
    out = label.copy()
    unlabelled = torch.from_numpy((label == 0) | (label == IGNORE_INDEX))
    for c in present:
        free = unlabelled & ((score if score.dim() == 2 else score[c - 1]) > tau)
        grown = attached_to(free[None, None], torch.from_numpy(out == c)[None, None])[0, 0].numpy()
        out[grown & ((out == 0) | (out == IGNORE_INDEX))] = c
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--taus", type=float, nargs="+", default=[0.3, 0.4, 0.5])
    ap.add_argument("--rule", choices=("absent", "ring"), default="absent", help="what question 2 fills from")
    ap.add_argument("--background", type=float, default=0.0, help="--rule ring: score against the background below this")
    ap.add_argument("--part", type=float, default=0.5, help="--rule ring: the part, share of the CAM's peak")
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
        if args.rule == "ring":
            score = ring_maps(model, s["img"], s["label"], gt.shape, args.part, args.background)
        else:
            score = absent
        for r, tau in rows.items():
            lab = label if tau is None else complete(label, score, present, tau)
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
