"""The whole pipeline on one screen, IRN's ``run_sample.py`` with types.

The stages are declared once in :mod:`cpmc_lib.stages` (what each runs and reads);
:func:`ensure` runs one after what it reads, each reused when the run store has it for the config,
and the command line, the notebooks and the sweeps call it. :func:`run` (``python -m cpmc_lib
pipeline --config ...``) runs every stage and writes ``runs/<run>/metrics.json``::

    {"dataset": {...card...}, "config_hash": "...",
     "cams": {"cam": {"miou", "threshold", "precision", "recall", "pathology", "gt_free"}, "refined": ...,
              "proto": ..., "cpmc": ..., "gradcam": ..., "gradcampp": ..., "layercam": ...},
     "pseudo": {"threshold", "threshold_rule", "split", "images", "scored_on", "scored_images",
                "cpmc": {"miou", "iou", "ignore_frac", "pathology", "pathology_by_class", ..},
                "cpmc_crf": {..}},
     "seg": {"split", "wsss": {"miou", "miou_crf", "iou", "curve", "curve_epochs", "pathology", "pathology_by_class", ..},
             "full": {..}, "ratio": .., "ratio_crf": ..},
     "seconds": {"<stage>": ..}, "stage_seconds": {..}, "peak_rss_mb": ..}

``cams.<m>.miou`` is each map at its best threshold against the ground truth (IRN's evaluation
protocol, an oracle view); ``cams.<m>.gt_free`` scores the same maps at the decision the pseudo
labels take, ``pseudo.threshold_rule``, which reads no ground truth (for the peers of
:data:`~cpmc_lib.cam_methods.PEERS` only when one of them is ``pseudo.method``). Pseudo labels are
made for the seg split (``cfg.seg_split()``, VOC: train_aug) and scored on the cam split's images
with masks. ``iou`` is per class (index = class id); ``pathology`` and ``pathology_by_class`` exist
on data with diagnostic masks (:class:`~cpmc_lib.diagnostics.LabelPathologyMeter`).

All mIoU values are percentages. ``seconds`` is the wall time each stage took in this call (near
zero when reused; the classifier's includes its pretraining); ``stage_seconds`` is what the stage
took when it was computed (CAM methods made in one pass share one entry, e.g.
``cams_refined+proto+cpmc``); their sum is the pipeline's wall time from scratch, less data
generation.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from . import synth
from .cam_methods import CAM_METHODS, PEERS
from .config import Config, load_config
from .datasets import build_dataset
from .distributed import barrier, is_main
from .io import load_json, save_json
from .metrics import json_iou
from .project import enter_project
from .pseudo import fp_split_scores, rule_scores
from .report import markdown_table, scored_labels
from .stages import STEPS, check_methods, stage, stage_hash
from .store import RunStore

__all__ = ["CAM_REPORT", "ensure", "ensure_data", "ensure_maps", "format_metrics", "load_metrics", "peak_rss_mb", "run", "setup"]

# The CAM methods the pipeline scores: every registered one, ours first, then the peer baselines.
CAM_REPORT = tuple(CAM_METHODS)
_CAM_KEYS = ("miou", "threshold", "precision", "recall", "pathology")


def ensure(
    cfg: Config, name: str, store: RunStore | None = None, method: str | None = None, progress: bool = True,
    seg_split: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Run stage ``name`` for ``cfg`` after every stage it reads, each reused when the store has it.

    What a stage reads is made first, unless the store already holds it (here, or in a sibling run
    that the stage links in); a stage the store holds needs no inputs at all.

    Args:
        name: a stage of :data:`cpmc_lib.stages.STAGES`.
        method: the CAM method of the per-method "cams" stage (default "cam").
        seg_split: "cams" only: also map the seg-split images the cam split lacks.

    Returns:
        The stage's ``run`` result.
    """
    s = stage(name)
    store = store or RunStore.for_config(cfg)
    if s.per_method:
        method = method or "cam"
    check_methods(cfg, *([method] if method else []))
    if not _done(cfg, store, name, method, seg_split):
        for dep in s.reads(cfg):
            if not _done(cfg, store, dep):
                ensure(cfg, dep, store, progress=progress)
        for m in s.maps(cfg):
            if not _done(cfg, store, "cams", m, s.seg_split):
                ensure(cfg, "cams", store, method=m, progress=progress, seg_split=s.seg_split)
    if s.per_method:
        return s.run(cfg, store, method=method, progress=progress, seg_split=seg_split)
    return s.run(cfg, store, progress=progress)


def ensure_maps(cfg: Config, store: RunStore, methods: tuple[str, ...] | list[str]) -> dict[str, dict[str, Any]]:
    """Each method's "cams" result (:func:`ensure`), plus ``gt_free``: the same maps at the pipeline's
    own ground-truth-free decision (:func:`~cpmc_lib.pseudo.rule_scores`), as in ``metrics.json``.

    The peers of :data:`~cpmc_lib.cam_methods.PEERS` are compared in the oracle view only: no
    ``gt_free`` unless one of them is ``pseudo.method``.
    """
    results = {m: dict(ensure(cfg, "cams", store, method=m)) for m in methods}
    for m, r in results.items():
        if m not in PEERS or m == cfg.pseudo.method:
            r["gt_free"] = rule_scores(cfg, store, m)
    return results


def _done(cfg: Config, store: RunStore, name: str, method: str | None = None, seg_split: bool = False) -> bool:
    """Whether the store holds stage ``name`` (``method``'s maps, also of the seg split with ``seg_split``)."""
    if method is None:
        return store.has(name, cfg)
    return store.map_metrics(cfg, method) is not None and (not seg_split or store.has_seg_maps(cfg, method))


def ensure_data(cfg: Config, progress: bool = True) -> dict[str, Any]:
    """The data set's card; the synthetic benchmark is generated first if it is missing."""
    if cfg.data.kind == "synth":
        if is_main():
            synth.ensure_generated(cfg.synth, cfg.data_root(), progress=progress)
        barrier()  # under torchrun the other ranks wait for rank 0's data set, then read its card
        return synth.ensure_generated(cfg.synth, cfg.data_root(), progress=False)
    ds = build_dataset(cfg, cfg.data.train_split)  # checks the layout and the class count early
    return {"kind": cfg.data.kind, "root": str(cfg.data_root()), "num_classes": ds.num_classes,
            "class_names": list(ds.class_names), "train_images": len(ds)}  # fmt: skip


def setup(
    config_path: str | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[Config, RunStore]:
    """A chapter's first line: its config, its run store, and the data set in place.

    A relative ``config_path`` that names a file of the project rather than of the working
    directory (a JupyterLab kernel starts in ``notebooks/``) moves the working directory to the
    project first (:func:`cpmc_lib.project.enter_project`), so the chapter reads the same data and
    run store as ``make book``.

    Example:
        >>> cfg, store = setup("configs/default.yaml", ["classifier.epochs=5"])  # doctest: +SKIP
    """
    if config_path is not None and (root := enter_project(config_path)) is not None:
        print(f"working directory: {root} (the project: the config's paths are relative to it)")
    cfg = load_config(config_path, overrides)
    check_methods(cfg)
    ensure_data(cfg)
    return cfg, RunStore.for_config(cfg)


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MiB (Linux units)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return max(own, kids) / scale


class _Clock:
    """Wall time of each call, by name (``metrics.json``'s ``seconds``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        self.seconds[name] = round(time.perf_counter() - t0, 1)
        return out


def run(
    cfg: Config, progress: bool = True, methods: tuple[str, ...] = CAM_REPORT, until: str = "segmentation"
) -> dict[str, Any]:
    """Run every stage for ``cfg`` (reusing finished ones) and write ``runs/<run>/metrics.json``.

    Args:
        methods: CAM methods to compute and score.
        until: the last step to run, one of :data:`cpmc_lib.stages.STEPS` (``classifier``, ``cams``,
            ``pseudo``, ``segmentation``); sweeps over CAM settings stop at ``cams``. Sections of
            later steps are then absent from the metrics.
    """
    if until not in STEPS or STEPS.index(until) < STEPS.index("cams"):
        raise ValueError(f"until={until!r} is not one of {', '.join(STEPS[STEPS.index('cams'):])}")
    check_methods(cfg, *methods)
    store, clock = RunStore.for_config(cfg), _Clock()
    card = clock("data", lambda: ensure_data(cfg, progress))
    clf = clock("classifier", lambda: ensure(cfg, "classifier", store, progress=progress))
    cam_results = {
        m: clock(f"cams_{m}", lambda m=m: ensure(cfg, "cams", store, method=m, progress=progress))
        for m in methods
    }
    metrics: dict[str, Any] = {
        "dataset": card,
        "config_hash": stage_hash(cfg, "segmentation"),
        "config": cfg.to_dict(),
        "classifier": {k: clf.get(k) for k in ("val_mAP", "val_F1", "epochs")},
        "cams": {m: {k: r[k] for k in _CAM_KEYS if k in r} for m, r in cam_results.items()},
    }
    # Each map also at the ground-truth-free decision the pseudo labels use; the peers, compared in
    # the oracle view only, are skipped unless they make the pseudo labels.
    for m in [m for m in cam_results if m not in PEERS or m == cfg.pseudo.method]:
        metrics["cams"][m]["gt_free"] = clock(f"gt_free_{m}", lambda m=m: rule_scores(cfg, store, m))
    # The FP promise at the operating point: the background the refined and prototype CAMs disagree
    # on (what the calibration can see) and share, and what the CPMC map keeps of each.
    if {"refined", "proto", "cpmc"} <= set(metrics["cams"]) and "gt_free" in metrics["cams"]["cpmc"]:
        split = clock("fp_split", lambda: fp_split_scores(cfg, store, ("refined", "proto"), "cpmc"))
        if split is not None:
            metrics["cams"]["cpmc"]["gt_free"]["fp_split"] = split
    stage_seconds = {"classifier": clf.get("seconds")}
    if cfg.uses_pretrain_stage() and (store.path("pretrain") / "manifest.json").is_file():
        stage_seconds = {"pretrain": store.result("pretrain").get("seconds"), **stage_seconds}
    for m, r in cam_results.items():  # methods made in one pass share one entry ("cams_a+b+c")
        stage_seconds["cams_" + "+".join(r.get("made_with") or [m])] = r.get("seconds")
    pl = None
    if STEPS.index(until) >= STEPS.index("pseudo"):
        pl = clock("pseudo", lambda: ensure(cfg, "pseudo", store, progress=progress))
        metrics["pseudo"] = _pseudo_metrics(pl)
        stage_seconds["pseudo"] = pl.get("seconds")
    if until == "segmentation":
        wsss = clock("seg_wsss", lambda: ensure(cfg, "segmentation", store, progress=progress))
        full = clock("seg_full", lambda: ensure(cfg, "segmentation_gt", store, progress=progress))
        metrics["seg"] = _seg_metrics(cfg, pl, wsss, full)
        for name, r in (("seg_wsss", wsss), ("seg_full", full)):
            stage_seconds[name] = round(r.get("train_seconds", 0) + r.get("eval_seconds", 0), 1)
    metrics.update(
        seconds={**clock.seconds, "total": round(sum(clock.seconds.values()), 1)},
        stage_seconds=stage_seconds,
        peak_rss_mb=round(peak_rss_mb(), 1),
    )
    if is_main():
        save_json(store.root / "metrics.json", metrics)
    return metrics


def _pseudo_metrics(pl: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's ``pseudo`` section from the pseudo stage's result."""
    method = pl["method"]
    return {
        # threshold: the plane (None: per image); threshold_rule: fixed, or the per-image rule's name
        "threshold": pl["threshold"],
        "threshold_rule": pl["threshold_rule"],
        "threshold_mean": pl.get("threshold_mean"),
        # pseudo.negatives: the classes that had negative prototypes (cpmc_lib.negatives) ...
        **({"negatives": pl["negatives"]} if "negatives" in pl else {}),
        # ... and the % of images without each class where its CAM fired (firing_outliers' input)
        **({"negative_firing": pl["negative_firing"]} if "negative_firing" in pl else {}),
        # labels made for `split`; the scores below cover `scored_images` images of `scored_on`
        **{k: pl.get(k) for k in ("split", "images", "scored_on", "scored_images")},
        **{
            f"{method}{suffix}": {
                # scored on the labelled pixels; ignore_frac: the share labelled 255 (pseudo.band);
                # miou_bg: every pixel, the ignored ones counted as background
                **{k: pl[f"{k}{suffix}"] for k in ("miou", "precision", "recall", "ignore_frac")},
                **{k: pl[f"{k}{suffix}"] for k in ("miou_bg", "iou_bg") if f"{k}{suffix}" in pl},
                # which pixels the labels get wrong (synthetic benchmark: its diagnostic masks), and per class
                **{k: pl[f"{k}{suffix}"] for k in ("iou", "pathology", "pathology_by_class") if f"{k}{suffix}" in pl},
            }
            for suffix in ("", "_crf")
        },
    }


def _seg_metrics(cfg: Config, pl: dict[str, Any], wsss: dict[str, Any], full: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's ``seg`` section: both networks on val, and weak / full (also after the CRF)."""
    # per-class IoU, and where each network goes wrong on val (synthetic benchmark: its diagnostic
    # masks), also per class
    detail = {
        k: {name: r[f"val_{name}"] for name in ("pathology", "pathology_by_class") if f"val_{name}" in r}
        for k, r in (("wsss", wsss), ("full", full))
    }
    for k, r in (("wsss", wsss), ("full", full)):
        if "val_iou" in r:
            detail[k]["iou"] = json_iou(r["val_iou"])
    seg = {
        "split": cfg.seg_split(),  # both networks train on it; scored on val
        "wsss": {
            "miou": wsss["val_miou"],
            "labels": f"{pl['method']}{'_crf' if pl.get('crf') else ''}",
            "train_images": wsss.get("train_images"),
            "curve": wsss.get("curve", []),
            "curve_epochs": wsss.get("curve_epochs", list(range(1, len(wsss.get("curve", [])) + 1))),
            **detail["wsss"],
        },
        "full": {
            "miou": full["val_miou"],
            "train_images": full.get("train_images"),
            "curve": full.get("curve", []),
            "curve_epochs": full.get("curve_epochs", list(range(1, len(full.get("curve", [])) + 1))),
            **detail["full"],
        },
        "ratio": wsss["val_miou"] / full["val_miou"] if full["val_miou"] else float("nan"),
    }
    if "val_miou_crf" in wsss and "val_miou_crf" in full:  # segmentation.test_crf: both networks + dense CRF
        seg["wsss"]["miou_crf"] = wsss["val_miou_crf"]
        seg["full"]["miou_crf"] = full["val_miou_crf"]
        # the field's protocol (DeepLab + CRF, both networks): SIPE's 0.89 is against a ceiling with CRF
        seg["ratio_crf"] = wsss["val_miou_crf"] / full["val_miou_crf"] if full["val_miou_crf"] else float("nan")
    return seg


def format_metrics(metrics: dict[str, Any]) -> str:
    """metrics.json as readable Markdown tables."""
    cam_rows = [{"method": m, **r} for m, r in metrics["cams"].items()]
    out = ["CAMs (cam split, best background threshold)"]
    out += [markdown_table(cam_rows, ["method", "miou", "threshold", "precision", "recall"]), ""]
    if "pseudo" in metrics:
        pl = metrics["pseudo"]
        rows = [{"labels": k, **v} for k, v in scored_labels(pl).items()]
        thr = "per image" if pl.get("threshold") is None else pl["threshold"]
        where = (f"{pl['images']} {pl['split']} images, scored on {pl['scored_images']} of {pl['scored_on']}"
                 if pl.get("split") else "cam split")  # fmt: skip
        out += [
            f"Pseudo labels ({where}; background rule {pl.get('threshold_rule')}, threshold {thr})",
            markdown_table(rows, ["labels", "miou", "ignore_frac", "miou_bg", "precision", "recall"]),
            "",
        ]
    if "seg" in metrics:
        seg = metrics["seg"]
        rows = [
            {"trained on": f"{seg['wsss']['labels']} pseudo labels", **seg["wsss"]},
            {"trained on": "ground truth (full supervision)", **seg["full"]},
        ]
        split = f"trained on {seg['split']}, " if seg.get("split") else ""
        crf = "ratio_crf" in seg
        out += [
            f"Segmentation ({split}scored on the val split)",
            markdown_table(rows, ["trained on", "miou", *(["miou_crf"] if crf else [])]),
        ]
        out += [f"weak / full: {100 * seg['ratio']:.1f} %"
                + (f"; with the dense CRF on both: {100 * seg['ratio_crf']:.1f} %" if crf else ""), ""]
    out += ["Seconds: " + ", ".join(f"{k} {v}" for k, v in metrics["seconds"].items())]
    out += [f"Peak memory: {metrics['peak_rss_mb']:.0f} MiB"]
    return "\n".join(out)


def load_metrics(cfg: Config) -> dict[str, Any]:
    """The metrics.json of ``cfg``'s run."""
    return load_json(RunStore.for_config(cfg).root / "metrics.json")
