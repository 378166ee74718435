"""Tune and ablate the CPMC maps on a trained classifier: a grid of settings, one table.

Reproduces the tuning behind the defaults of ``RefinementConfig``, ``PrototypeConfig`` and
``CalibrationConfig``. The network is run once per image (and its horizontal flip) and its
outputs are cached; every setting then re-runs only :func:`cpmc_lib.cpmc.cpmc_maps`, fuses the
flip and normalises with the "cams" stage's own functions (:func:`cpmc_lib.cam_methods.fuse_views`,
:func:`~cpmc_lib.cam_methods.normalize_cams`; single scale), and scores the maps with the stage's
own evaluators: best-threshold mIoU (:class:`~cpmc_lib.metrics.CamEvaluator`) and the pathology
diagnostics at that threshold (:class:`~cpmc_lib.diagnostics.PathologyMeter`).

Usage::

    python benchmarks/tune_cpmc.py --run default --grid main            # tuning seed (data/synth)
    python benchmarks/tune_cpmc.py --run validation_s1 --data data/synth_s1 --set synth.seed=1 --grid final

``--limit N`` scores the first N images of the cam split (0 = all); ``--model`` scores other
weights (e.g. a checkpoint's model state); ``--side-from MODEL`` swaps in the side projections of
another classifier. Nothing trains them (the classification loss does not reach them), so they stay
a seeded random draw (up to scale); swapping them separates that draw from the backbone. Columns: map, setting, mIoU at the best threshold (the
oracle view of IRN's protocol) and that threshold, body / atypical-body recall, % of present-class
context and of distractor pixels labelled object there; then the ground-truth-free decisions of
the pseudo labels: mIoU with Otsu's per-image threshold and with the frozen ``pseudo.bg_threshold``,
and body recall / context / distractor labelled object under Otsu; FN / FP region cells per image.

Grids: ``refine``, ``proto``, ``proto_options``, ``cpmc`` (the tuning order of the defaults; each
grid holds the default value of every field it varies), ``fpfn`` (the guards against false
positives: attachment gates, FP prototypes that lower their class, several prototypes per class) and
``final`` (the book's ablation, ``papermill_runs/ablation.yaml``: the defaults' rows and the
ablations of their parts). The frozen ``pseudo.bg_threshold`` is the
``thr`` column of the ``final`` grid's default CPMC row on the tuning seed. ``fpfn`` starts with
the classifier-CAM and prototype-CAM rows its promises compare against, so its ``--out`` files of
several training seeds can be checked together by ``benchmarks/tune_over_seeds.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cpmc_lib.cam_methods import fuse_views, normalize_cams
from cpmc_lib.config import load_config
from cpmc_lib.cpmc import cpmc_maps, foreground_maps
from cpmc_lib.datasets import build_dataset
from cpmc_lib.diagnostics import PathologyMeter
from cpmc_lib.labels import image_threshold
from cpmc_lib.metrics import CamEvaluator, ConfusionMeter, cam_to_mask
from cpmc_lib.models import load_classifier
from cpmc_lib.refinement import classifier_cam, context_features, pixel_affinity, refine_with_context
from cpmc_lib.store import RunStore
from cpmc_lib.sweep import ablation_rows
from cpmc_lib.transforms import eval_transform


# name -> [(map, setting name, overrides)], applied on top of the --set base. Tuning order:
# "refine" (context refinement), then "proto" and "cpmc" with the chosen refinement as base;
# "final" reports the chosen defaults and their ablations.
def _grid_refine() -> list[tuple[str, str, dict]]:
    rows = [("cam", "classifier CAM", {})]
    for src in ("stages", "feat", "hie", "image+stages"):
        for power in (1.0, 4.0, 8.0, 16.0, 32.0, 64.0):
            for it in (1, 2):
                o = {"refinement.source": src, "refinement.power": power, "refinement.iterations": it}
                rows.append(("refined", f"{src} b{power:g} T{it}", o))
    return rows


def _grid_proto() -> list[tuple[str, str, dict]]:
    rows = []
    for t in (0, 2):  # seeds from the raw (T=0) or the refined CAM
        r = {"refinement.iterations": t}
        for f in (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0):
            rows.append(("proto", f"T{t} argmax bg{f}", {**r, "prototypes.bg_factor": f}))
        for ft in (0.5, 0.7, 0.9):
            for bt in (0.1, 0.3):
                o = {
                    **r,
                    "prototypes.seed_rule": "threshold",
                    "prototypes.fg_threshold": ft,
                    "prototypes.bg_threshold": bt,
                }
                rows.append(("proto", f"T{t} thr fg{ft} bg{bt}", o))
        for fq in (0.2, 0.35, 0.5, 0.7):
            for bq in (0.3, 0.5):
                o = {
                    **r,
                    "prototypes.seed_rule": "quantile",
                    "prototypes.fg_quantile": fq,
                    "prototypes.bg_quantile": bq,
                }
                rows.append(("proto", f"T{t} quant fg{fq} bg{bq}", o))
        rows.append(("proto", f"T{t} iou", {**r, "prototypes.seed_rule": "iou", "prototypes.bg_factor": 0.5}))
    return rows


def _grid_options(which: str) -> list[tuple[str, str, dict]]:
    rows = []
    for mode in ("drop", "subtract", "gate"):
        rows.append((which, f"bg_mode {mode}", {"prototypes.bg_mode": mode}))
    for feat in ("feat",):
        rows.append((which, f"feature {feat}", {"prototypes.feature": feat}))
    for m, ms in ((2, 4), (3, 4), (3, 8)):
        rows.append(
            (which, f"global clusters {m} min {ms}", {"prototypes.clusters": m, "prototypes.min_size": ms})
        )
    return rows


def _grid_cpmc() -> list[tuple[str, str, dict]]:
    rows = [("proto", "base", {}), ("cpmc", "base", {})]
    for m, ms in ((1, 1), (1, 4), (3, 2), (3, 4), (5, 2)):
        rows.append(
            ("cpmc", f"local clusters {m} min {ms}", {"calibration.clusters": m, "calibration.min_size": ms})
        )
    for f in (0.3, 0.5, 0.8):
        rows.append(("cpmc", f"ref argmax bg{f}", {"calibration.ref_bg_factor": f}))
    for q in (0.3, 0.5, 0.7, 0.85):
        rows.append(
            (
                "cpmc",
                f"ref quantile {q}",
                {"calibration.ref_rule": "quantile", "calibration.ref_bg_quantile": q},
            )
        )
    for f in (0.5, 0.8, 1.0, 1.2, 1.5, 1.75, 2.0):
        rows.append(("cpmc", f"proto bg{f}", {"calibration.proto_bg_factor": f}))
    rows.append(("cpmc", "pairing proto", {"calibration.pairing": "proto"}))
    for d in ("keep", "drop", "fp"):
        rows.append(("cpmc", f"detached {d}", {"calibration.detached": d}))
    for r in (-1, 0, 1, 2):
        rows.append(("cpmc", f"fp radius {r}", {"calibration.fp_radius": r}))
    rows.append(("cpmc", "FN only", {"calibration.use_fp": False}))
    rows.append(("cpmc", "FP only", {"calibration.use_fn": False}))
    for mode in ("drop", "subtract", "gate"):
        rows.append(("cpmc", f"bg_mode {mode}", {"prototypes.bg_mode": mode}))
    return rows


# The calibration before the FP guards (issue 16): the base of the fpfn grid.
UNGUARDED = {"calibration.proto_bg_factor": 1.0, "calibration.fn_radius": -1, "calibration.gate": "none"}


def _grid_fpfn() -> list[tuple[str, str, dict]]:
    """Issue 16: guards against false positives on top of the unguarded calibration (each row adds
    its options to :data:`UNGUARDED`), then the strict prototype labels combined with them."""
    rows = [("cam", "classifier CAM", {}), ("proto", "base", {}), ("cpmc", "unguarded", UNGUARDED)]
    for which, name, o in _grid_fpfn_options():
        rows.append((which, name, {**UNGUARDED, **o}))
    for bg in (1.5, 1.75, 2.0):
        strict = {**UNGUARDED, "calibration.proto_bg_factor": bg}
        rows.append(("cpmc", f"proto bg{bg}", strict))
        rows.append(("cpmc", f"proto bg{bg} + gate cam", {**strict, "calibration.gate": "attached_cam"}))
        for r in (0, 1, 2):
            o = {**strict, "calibration.gate": "attached_cam", "calibration.fn_radius": r}
            rows.append(("cpmc", f"proto bg{bg} + gate cam + fn radius {r}", o))
    rows.append(("cpmc", "default", {}))
    return rows


def _grid_fpfn_options() -> list[tuple[str, str, dict]]:
    gate = {"calibration.gate": "attached_cam"}
    rows = [("cpmc", "gate attached", {"calibration.gate": "attached"})]
    rows.append(("cpmc", "gate attached_cam", gate))
    for action in ("suppress", "both"):
        for r in (0, 1, -1):
            o = {"calibration.fp_action": action, "calibration.fp_radius": r}
            rows.append(("cpmc", f"fp {action} r{r}", o))
    for m in (2, 3):
        rows.append(("cpmc", f"local clusters {m}", {"calibration.clusters": m}))
    rows.append(("cpmc", "global clusters 2", {"prototypes.clusters": 2, "prototypes.min_size": 4}))
    rows.append(("proto", "global clusters 2", {"prototypes.clusters": 2, "prototypes.min_size": 4}))
    both = {"calibration.fp_action": "both"}
    rows.append(("cpmc", "gate cam + fp both", {**gate, **both}))
    for r in (0, 1, 2):  # FN prototypes acting near their object only
        rows.append(("cpmc", f"fn radius {r}", {"calibration.fn_radius": r}))
        rows.append(("cpmc", f"fn radius {r} + gate cam", {"calibration.fn_radius": r, **gate}))
    near = {"calibration.fn_radius": 0, **gate, "calibration.fp_radius": 1}
    rows.append(("cpmc", "fn r0 + gate cam + fp r1", near))
    rows.append(("cpmc", "fn r0 + gate cam + fp both r1", {**near, **both}))
    return rows


GRIDS: dict[str, list[tuple[str, str, dict]]] = {
    "refine": _grid_refine(),
    "proto": _grid_proto(),
    "proto_options": _grid_options("proto"),
    "cpmc": _grid_cpmc(),
    "fpfn": _grid_fpfn(),
    # the book's ablation, written once in papermill_runs/ablation.yaml
    "final": [(m, title, o) for title, (m, o) in ablation_rows().items()],
}


def cache_outputs(model, dataset, limit: int, batch: int = 50) -> dict:
    """Network outputs of every image and its flip (at the CAM grid, float16) plus masks."""
    n = len(dataset) if limit <= 0 else min(limit, len(dataset))
    keys = ("cam", "feat", "hie", "ctx")
    store: dict[str, list] = {k: [] for k in (*keys, "img", "label", "mask", "diag")}
    with torch.no_grad():
        for start in range(0, n, batch):
            samples = [dataset[i] for i in range(start, min(n, start + batch))]
            img = torch.stack([s["img"] for s in samples])
            x = torch.cat([img, img.flip(-1)])
            out = model(x)
            # The multi-stage context feature is reduced to the CAM grid once here.
            out["ctx"] = context_features("stages", out["feat"], out["stages"])
            for k in keys:
                store[k].append(out[k].half().view(2, len(samples), *out[k].shape[1:]).transpose(0, 1))
            small = F.interpolate(x, size=out["feat"].shape[-2:], mode="area")
            store["img"].append(small.half().view(2, len(samples), *small.shape[1:]).transpose(0, 1))
            store["label"].append(torch.stack([s["label"] for s in samples]))
            store["mask"].append(torch.stack([torch.as_tensor(s["mask"]).to(torch.uint8) for s in samples]))
            store["diag"].append(torch.stack([torch.as_tensor(s["diag"]).to(torch.uint8) for s in samples]))
            print(f"cached {start + len(samples)}/{n}", flush=True)
    cache = {k: torch.cat(v) for k, v in store.items()}
    cache["ctx_split"] = [s.shape[1] for s in out["stages"]]
    return cache


def fg_maps(cache: dict, sl: slice, cfg, which: str) -> tuple[torch.Tensor, dict]:
    """Normalised foreground maps at image size for a slice of images, as the cams stage fuses them."""
    b = sl.stop - sl.start
    label = cache["label"][sl]
    two = lambda k: cache[k][sl].transpose(0, 1).reshape(2 * b, *cache[k].shape[2:]).float()  # noqa: E731
    lab2 = torch.cat([label, label])
    if which == "cam":
        m, info = F.relu(two("cam")), {}
    else:
        out = {"cam": two("cam"), "feat": two("feat"), "hie": two("hie"), "stages": [two("ctx")]}
        src = cfg.refinement.source
        r = cfg.refinement
        if src.startswith("image+"):  # the cached image is already at the grid size
            r = type(r)(**{**r.__dict__, "source": "stages"})
            stages = (
                list(two("ctx").split(cache["ctx_split"], dim=1)) if src == "image+stages" else [two("feat")]
            )
            out["stages"] = [two("img"), *stages]
        if which == "refined":  # only step 1-3 are needed
            cam = classifier_cam(out["cam"], lab2)
            ctx = context_features(r.source, out["feat"], out["stages"], out["hie"])
            refined = refine_with_context(cam, pixel_affinity(ctx, r.power), r.iterations)
            return _fuse(refined[:, 1:], b, label, cache), {}
        maps = cpmc_maps(out, lab2, r, cfg.prototypes, cfg.calibration, None)
        m = (
            maps["refined"][:, 1:]
            if which == "refined"
            else foreground_maps(maps[which], cfg.prototypes.bg_mode)
        )
        info = {k: maps[k].flatten(1).sum(1).float().mean().item() for k in ("fn", "fp")}
    return _fuse(m, b, label, cache), info


def _fuse(m: torch.Tensor, b: int, label: torch.Tensor, cache: dict) -> torch.Tensor:
    """Flip fusion, resize to the image and normalisation: the cams stage's own functions."""
    return normalize_cams(fuse_views(m, b, tuple(cache["mask"].shape[-2:])), label)


def evaluate(
    cache: dict, cfg, which: str, num_classes: int, step: float, chunk: int = 100, fixed: float = 0.45
) -> dict:
    """mIoU at the best threshold (an oracle view) plus pathology diagnostics there, and mIoU at the
    ground-truth-free decisions: Otsu per image (with its pathology) and the fixed ``fixed``."""
    n = len(cache["label"])
    ev = CamEvaluator(num_classes, step=step)
    parts, infos = [], []
    for s in range(0, n, chunk):
        sl = slice(s, min(n, s + chunk))
        m, info = fg_maps(cache, sl, cfg, which)
        infos.append(info)
        parts.append((sl, m.half()))
        for i, j in enumerate(range(sl.start, sl.stop)):
            keys = cache["label"][j].nonzero().flatten()
            ev.update(m[i, keys], keys + 1, cache["mask"][j].long())
    res = ev.compute()
    meter = PathologyMeter(res["threshold"])
    # The ground-truth-free decisions: per image (Otsu) and the config's frozen value.
    free = {r: (ConfusionMeter(num_classes), PathologyMeter(0.5)) for r in ("otsu", "fixed")}
    for sl, m in parts:
        for i, j in enumerate(range(sl.start, sl.stop)):
            keys = cache["label"][j].nonzero().flatten()
            cam, gt, diag = m[i, keys].float(), cache["mask"][j].long(), cache["diag"][j].long()
            meter.update(cam, keys + 1, gt, diag)
            for rule, (conf, patho) in free.items():
                thr = image_threshold(cam.numpy(), rule, fixed)
                conf.update(cam_to_mask(cam, keys + 1, thr), gt)
                patho.update(cam, keys + 1, gt, diag, threshold=thr)
    p = meter.compute()
    po = free["otsu"][1].compute()
    # Region cells per image and view (the image and its flip).
    fn = sum(i.get("fn", 0) for i in infos) / len(infos)
    fp = sum(i.get("fp", 0) for i in infos) / len(infos)
    return {
        "miou": res["miou"], "thr": res["threshold"], "prec": res["precision"], "rec": res["recall"],
        "body": p["recall_body"], "atyp": p["recall_atypical"], "part": p["recall_part"],
        "ctx": p["act_context"], "fp_ctx": p["fp_context"], "dist": p["fp_distractor"],
        "fn_cells": fn, "fp_cells": fp,
        "miou_otsu": free["otsu"][0].compute()["miou"], "miou_fixed": free["fixed"][0].compute()["miou"],
        "body_otsu": po["recall_body"], "fp_ctx_otsu": po["fp_context"], "dist_otsu": po["fp_distractor"],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=None)
    ap.add_argument("--run", default="default")
    ap.add_argument("--data", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--grid", default="final", help="grid name, or a JSON list of [map, name, overrides]")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--cache", default="", help="cache file of network outputs (reused if it exists)")
    ap.add_argument("--out", default="", help="write the table as JSON here")
    ap.add_argument("--model", default="", help="classifier weights (default: the run's classifier stage)")
    ap.add_argument(
        "--side-from", default="", metavar="MODEL",
        help="replace the side projections (the prototypes' features) by those of another classifier's weights",
    )  # fmt: skip
    args = ap.parse_args()
    overrides = [*args.overrides, f"run={args.run}"] + ([f"data.root={args.data}"] if args.data else [])
    cfg = load_config(args.config, overrides)
    start = time.perf_counter()
    weights = Path(args.model) if args.model else RunStore.for_config(cfg).path("classifier") / "model.pt"
    torch.set_grad_enabled(False)
    if args.cache and Path(args.cache).is_file():
        cache = torch.load(args.cache, weights_only=True)
        if 0 < args.limit < len(cache["label"]):
            cache = {k: v[: args.limit] if torch.is_tensor(v) else v for k, v in cache.items()}
    else:
        model = load_classifier(weights, cfg)
        if args.side_from:  # is a difference between two classifiers in the backbone or in the projections?
            other = torch.load(args.side_from, map_location="cpu", weights_only=True)
            model.side.load_state_dict({k[len("side.") :]: v for k, v in other.items() if k.startswith("side.")})
        dataset = build_dataset(cfg, cfg.data.cam_split, eval_transform())
        cache = cache_outputs(model, dataset, args.limit)
        if args.cache:
            torch.save(cache, args.cache)
    print(f"cache ready: {len(cache['label'])} images, {time.perf_counter() - start:.0f}s", flush=True)
    grid = json.loads(args.grid) if args.grid.strip().startswith("[") else GRIDS[args.grid]
    head = (
        f"{'map':8} {'setting':40} {'mIoU':>5} {'thr':>4} {'body':>5} {'atyp':>5} {'fpCtx':>5} {'fpDis':>5}"
        f" | {'otsu':>5} {'fixed':>5} {'bodyO':>5} {'ctxO':>5} {'disO':>5} | {'FN':>5} {'FP':>5} {'s':>4}"
    )
    print(head, flush=True)
    rows = []
    for which, name, o in grid:
        t = time.perf_counter()
        c = cfg.replace(**o) if o else cfg
        r = evaluate(cache, c, which, cfg.data.num_classes, cfg.cams.thresholds_step, fixed=c.pseudo.bg_threshold)
        r.update(map=which, setting=name, overrides=o, seconds=round(time.perf_counter() - t, 1))
        rows.append(r)
        print(
            f"{which:8} {name[:40]:40} {r['miou']:5.1f} {r['thr']:4.2f} {r['body']:5.1f} {r['atyp']:5.1f}"
            f" {r['fp_ctx']:5.1f} {r['dist']:5.1f} | {r['miou_otsu']:5.1f} {r['miou_fixed']:5.1f} {r['body_otsu']:5.1f}"
            f" {r['fp_ctx_otsu']:5.1f} {r['dist_otsu']:5.1f} | {r['fn_cells']:5.1f} {r['fp_cells']:5.1f} {r['seconds']:4.0f}",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
