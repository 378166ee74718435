"""Ground-truth-free background decisions compared on saved maps: how far each is from the oracle.

The pipeline cuts each map at ``pseudo.threshold_rule`` (default: Otsu's cut of each image's own
top-class map). This script scores a method's saved maps under several rules that read no ground
truth, beside the oracle (the best single threshold against the masks, IRN's evaluation protocol),
so a rule can be chosen on the tuning and validation families and must then hold on the test family:

- ``otsu``: per image, Otsu's cut of its top-class map (the default);
- ``pooled``: one Otsu cut of the top-class values pooled over every image of the split;
- ``class``: per class, Otsu's cut of that class's map pooled over the images labelled with it;
- ``fixed``: ``pseudo.bg_threshold``, frozen;
- ``otsu3``: per image, the lower cut of Otsu's three-group split (background; completed bodies and
  parts above it);
- ``li``: per image, Li's minimum cross-entropy threshold of the top-class map;
- ``class_image``: per image, each present class's map cut at Otsu's threshold of that map alone.

Run on one run (``--config``/``--set``; its maps are made first if missing), or on every setting of
the drawn validation family at one training seed (``--family validation``; never the test family,
which no choice may read)::

    python benchmarks/background_rules.py --config configs/default.yaml --method cpmc
    python benchmarks/background_rules.py --family validation --seed 0 --method cpmc --method proto

``--record`` also writes ``papermill_runs/records/background_rules.json`` (every setting's scores,
the commit, the date and the command), which the method page renders under the background decision.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np

from cpmc_lib.config import load_config
from cpmc_lib.datasets import build_dataset
from cpmc_lib.families import family_points
from cpmc_lib.io import save_json
from cpmc_lib.labels import otsu_cut, otsu_threshold
from cpmc_lib.mapfile import load_map
from cpmc_lib.metrics import ConfusionMeter
from cpmc_lib.pipeline import ensure, ensure_data
from cpmc_lib.store import RunStore
from cpmc_lib.sweep import RECORDS

BINS = 64
RULES = ("otsu", "pooled", "class", "fixed", "otsu3", "li", "class_image")


def otsu3_low(v: np.ndarray, bins: int = BINS) -> float:
    """The lower cut of Otsu's three-group split of ``v`` in [0, 1]: background below it, and the
    middle and upper groups (completed bodies, discriminative parts) above."""
    hist = _hist(v).astype(np.float64)
    c = (np.arange(bins) + 0.5) / bins
    w, s = np.concatenate([[0], np.cumsum(hist)]), np.concatenate([[0], np.cumsum(hist * c)])
    i, j = np.triu_indices(bins + 1, 1)  # groups [0, i), [i, j), [j, bins)
    ok = (i > 0) & (j < bins)
    i, j = i[ok], j[ok]
    w0, w1, w2 = w[i], w[j] - w[i], w[-1] - w[j]
    s0, s1, s2 = s[i], s[j] - s[i], s[-1] - s[j]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.nan_to_num(s0**2 / w0) + np.nan_to_num(s1**2 / w1) + np.nan_to_num(s2**2 / w2)
    return float(i[np.argmax(between)]) / bins


def li_cut(v: np.ndarray, tol: float = 1e-4) -> float:
    """Li's minimum cross-entropy threshold of ``v`` (Li & Tam's iteration, as scikit-image's)."""
    v = np.clip(v.ravel().astype(np.float64), 1e-6, 1)
    t = v.mean()
    for _ in range(200):
        lo, hi = v[v <= t], v[v > t]
        if not lo.size or not hi.size:
            return 1.0
        m0, m1 = lo.mean(), hi.mean()
        new = (m1 - m0) / (np.log(m1) - np.log(m0))
        if abs(new - t) < tol:
            break
        t = new
    return float(t)


def _hist(v: np.ndarray) -> np.ndarray:
    return np.bincount(np.minimum((np.clip(v, 0, 1) * BINS).astype(np.int64), BINS - 1).ravel(), minlength=BINS)


def compare_rules(cfg, method: str) -> dict:
    """mIoU of ``method``'s saved cam-split maps under each rule of :data:`RULES` and the oracle grid."""
    store = RunStore.for_config(cfg)
    ensure(cfg, "cams", store, method=method, progress=False)
    folder, metrics = store.require_maps(cfg, method)
    ds = build_dataset(cfg, cfg.data.cam_split)
    k = cfg.data.num_classes
    pooled, per_class = np.zeros(BINS), np.zeros((k, BINS))
    for name in ds.names:  # pass 1: the pooled histograms
        saved = load_map(folder, name)
        cam = saved.cam.astype(np.float32)
        if cam.shape[0]:
            pooled += _hist(cam.max(0))
            for key, m in zip(saved.keys, cam, strict=True):
                per_class[key] += _hist(m)
    class_cut = np.array([otsu_cut(h) if h.sum() else 1.0 for h in per_class])
    pooled_cut = otsu_cut(pooled)
    grid = np.round(np.arange(0.05, 1.0, 0.05), 2)
    meters = {r: ConfusionMeter(k) for r in RULES} | {f"oracle@{t}": ConfusionMeter(k) for t in grid}
    for name in ds.names:  # pass 2: each rule's masks scored
        gt, _ = ds.targets(name)
        if gt is None:
            continue
        saved = load_map(folder, name)
        cam = saved.cam.astype(np.float32)
        if not cam.shape[0]:
            for meter in meters.values():
                meter.update(np.zeros_like(gt, dtype=np.int64), gt)
            continue
        top, chan = cam.max(0), cam.argmax(0)
        cls = saved.keys[chan]
        planes = {
            "otsu": otsu_threshold(top), "pooled": pooled_cut, "class": class_cut[cls],
            "fixed": cfg.pseudo.bg_threshold, **{f"oracle@{t}": t for t in grid},
        }  # fmt: skip
        planes["otsu3"], planes["li"] = otsu3_low(top), li_cut(top)
        for r, plane in planes.items():
            meters[r].update(np.where(top > plane, cls, 0).astype(np.int64), gt)
        # each present class cut at Otsu's threshold of its own map in this image
        own = np.stack([m > otsu_threshold(m) for m in cam])
        score = np.where(own, cam, -1.0)
        meters["class_image"].update(np.where(own.any(0), saved.keys[score.argmax(0)], 0).astype(np.int64), gt)
    scores = {r: m.compute()["miou"] for r, m in meters.items()}
    oracle = max((v, r) for r, v in scores.items() if r.startswith("oracle@"))
    return {
        "method": method, "oracle": oracle[0], "oracle_threshold": float(oracle[1].split("@")[1]),
        "stage_oracle": metrics["miou"], "pooled_cut": pooled_cut,
        "class_cuts": {int(c): float(class_cut[c]) for c in range(1, k) if per_class[c].sum()},
        **{r: scores[r] for r in RULES},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--method", action="append", default=[])
    parser.add_argument("--family", choices=["validation"], help="every setting of the drawn validation family")
    parser.add_argument("--seed", type=int, default=0, help="the training seed of --family's points")
    parser.add_argument("--record", action="store_true", help=f"also write {RECORDS / 'background_rules.json'}")
    args = parser.parse_args()
    if args.family:
        points = [p for p in family_points(args.family) if p["set"]["seed"] == args.seed]
        configs = [load_config(args.config, [*(f"{k}={v}" for k, v in p["set"].items()), f"run={p['name']}", *args.set])
                   for p in points]  # fmt: skip
    else:
        configs = [load_config(args.config, args.set)]
    rows = []
    for cfg, method in ((c, m) for c in configs for m in args.method or ["cpmc"]):
        ensure_data(cfg, progress=False)
        r = compare_rules(cfg, method)
        rows.append({"setting": cfg.run, **r})
        costs = "  ".join(f"{rule} {r[rule]:.1f} ({r[rule] - r['oracle']:+.1f})" for rule in RULES)
        print(f"{cfg.run:>16} {method:>8}: oracle {r['oracle']:.1f} @ {r['oracle_threshold']:.2f}  {costs}"
              f"  [pooled cut {r['pooled_cut']:.2f}]")
    if args.record:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        save_json(RECORDS / "background_rules.json", {
            "command": " ".join(["python", *sys.argv]), "commit": commit, "rules": list(RULES),
            "family": args.family or "tuning", "seed": args.seed,
            "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"), "rows": rows,
        })  # fmt: skip


if __name__ == "__main__":
    main()
