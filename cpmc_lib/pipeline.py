"""The whole pipeline on one screen, IRN's ``run_sample.py`` with types.

``python -m cpmc_lib pipeline --config configs/default.yaml`` runs every stage in order, each
reusing what the run store already holds for its config, and writes ``runs/<run>/metrics.json``::

    {"dataset": {...card...}, "config_hash": "...",
     "cams": {"cam": {"miou", "threshold", "precision", "recall", "pathology", "gt_free"}, "refined": ...,
              "proto": ..., "cpmc": ..., "gradcam": ..., "gradcampp": ..., "layercam": ...},
     "pseudo": {"threshold", "threshold_rule", "cpmc": {"miou": ..}, "cpmc_crf": {"miou": ..}},

``cams.<m>.miou`` is each map at its best threshold against the ground truth (IRN's evaluation
protocol, an oracle view); ``cams.<m>.gt_free`` scores the same maps at the decision the pseudo
labels take, ``pseudo.threshold_rule``, which reads no ground truth.
     "seg": {"wsss": {"miou": ..}, "full": {"miou": ..}, "ratio": ..},
     "seconds": {"<stage>": ..}, "peak_rss_mb": ..}

All mIoU values are percentages. ``seconds`` is the wall time each stage took in this call (near
zero when reused); ``stage_seconds`` is what the stage took when it was computed (CAM methods made
in one pass share one entry, e.g. ``cams_refined+proto+cpmc``); their sum is the pipeline's wall
time from scratch, less data generation.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from . import cams, classifier, pseudo, segmentation, synth
from .config import Config
from .datasets import build_dataset
from .distributed import barrier, is_main
from .io import load_json, save_json
from .report import markdown_table
from .store import RunStore

__all__ = ["CAM_REPORT", "format_metrics", "peak_rss_mb", "run"]

# The CAM methods the pipeline scores: ours first, then the peer baselines.
CAM_REPORT = ("cam", "refined", "proto", "cpmc", "gradcam", "gradcampp", "layercam")
_CAM_KEYS = ("miou", "threshold", "precision", "recall", "pathology")


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MiB (Linux units)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return max(own, kids) / scale


def _dataset_card(cfg: Config, progress: bool) -> dict[str, Any]:
    if cfg.data.kind == "synth":
        if is_main():
            synth.ensure_generated(cfg.synth, cfg.data_root(), progress=progress)
        barrier()  # under torchrun the other ranks wait for rank 0's data set, then read its card
        return synth.ensure_generated(cfg.synth, cfg.data_root(), progress=False)
    ds = build_dataset(cfg, cfg.data.train_split)  # checks the layout and the class count early
    return {"kind": cfg.data.kind, "root": str(cfg.data_root()), "num_classes": ds.num_classes,
            "class_names": list(ds.class_names), "train_images": len(ds)}  # fmt: skip


UNTIL = ("cams", "pseudo", "seg")


def run(
    cfg: Config, progress: bool = True, methods: tuple[str, ...] = CAM_REPORT, until: str = "seg"
) -> dict[str, Any]:
    """Run every stage for ``cfg`` (reusing finished ones) and write ``runs/<run>/metrics.json``.

    Args:
        methods: CAM methods to compute and score.
        until: last stage to run: ``cams``, ``pseudo`` or ``seg`` (everything); sweeps over CAM
            settings stop at ``cams``. Sections of later stages are then absent from the metrics.
    """
    if until not in UNTIL:
        raise ValueError(f"until={until!r} is not one of {UNTIL}")
    store = RunStore.for_config(cfg)
    seconds: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        seconds[name] = round(time.perf_counter() - t0, 1)
        return out

    card = timed("data", lambda: _dataset_card(cfg, progress))
    clf = timed("classifier", lambda: classifier.run(cfg, store, progress=progress))
    cam_results = {
        m: timed(f"cams_{m}", lambda m=m: cams.run(cfg, store, method=m, progress=progress)) for m in methods
    }
    metrics: dict[str, Any] = {
        "dataset": card,
        "config_hash": cfg.stage_hash("segmentation"),
        "config": cfg.to_dict(),
        "classifier": {k: clf.get(k) for k in ("val_mAP", "val_F1", "epochs")},
        "cams": {m: {k: r[k] for k in _CAM_KEYS if k in r} for m, r in cam_results.items()},
    }
    for m in cam_results:  # each map also at the ground-truth-free decision the pseudo labels use
        metrics["cams"][m]["gt_free"] = timed(f"gt_free_{m}", lambda m=m: pseudo.rule_scores(cfg, store, m))
    stage_seconds = {"classifier": clf.get("seconds")}
    if cfg.pretrain.enabled and (store.path("pretrain") / "manifest.json").is_file():
        stage_seconds = {"pretrain": store.result("pretrain").get("seconds"), **stage_seconds}
    for m, r in cam_results.items():  # methods made in one pass share one entry ("cams_a+b+c")
        stage_seconds["cams_" + "+".join(r.get("made_with") or [m])] = r.get("seconds")
    if until != "cams":
        pl = timed("pseudo", lambda: pseudo.run(cfg, store, progress=progress))
        method = pl["method"]
        metrics["pseudo"] = {
            # threshold: the plane (None: per image); threshold_rule: fixed, or the per-image rule's name
            "threshold": pl["threshold"],
            "threshold_rule": pl["threshold_rule"],
            "threshold_mean": pl.get("threshold_mean"),
            method: {"miou": pl["miou"], "precision": pl["precision"], "recall": pl["recall"]},
            f"{method}_crf": {
                "miou": pl["miou_crf"],
                "precision": pl["precision_crf"],
                "recall": pl["recall_crf"],
            },
        }
        stage_seconds["pseudo"] = pl.get("seconds")
    if until == "seg":
        wsss = timed("seg_wsss", lambda: segmentation.run(cfg, store, labels="pseudo", progress=progress))
        full = timed("seg_full", lambda: segmentation.run(cfg, store, labels="gt", progress=progress))
        metrics["seg"] = {
            "wsss": {"miou": wsss["val_miou"], "labels": f"{method}{'_crf' if pl.get('crf') else ''}"},
            "full": {"miou": full["val_miou"]},
            "ratio": wsss["val_miou"] / full["val_miou"] if full["val_miou"] else float("nan"),
        }
        for name, r in (("seg_wsss", wsss), ("seg_full", full)):
            stage_seconds[name] = round(r.get("train_seconds", 0) + r.get("eval_seconds", 0), 1)
    metrics.update(
        seconds={**seconds, "total": round(sum(seconds.values()), 1)},
        stage_seconds=stage_seconds,
        peak_rss_mb=round(peak_rss_mb(), 1),
    )
    if is_main():
        save_json(store.root / "metrics.json", metrics)
    return metrics


def format_metrics(metrics: dict[str, Any]) -> str:
    """metrics.json as readable Markdown tables."""
    cam_rows = [{"method": m, **r} for m, r in metrics["cams"].items()]
    out = ["CAMs (cam split, best background threshold)"]
    out += [markdown_table(cam_rows, ["method", "miou", "threshold", "precision", "recall"]), ""]
    if "pseudo" in metrics:
        pl = metrics["pseudo"]
        rows = [{"labels": k, **v} for k, v in pl.items() if isinstance(v, dict)]
        thr = "per image" if pl.get("threshold") is None else pl["threshold"]
        out += [
            f"Pseudo labels (cam split; background rule {pl.get('threshold_rule')}, threshold {thr})",
            markdown_table(rows, ["labels", "miou", "precision", "recall"]),
            "",
        ]
    if "seg" in metrics:
        seg = metrics["seg"]
        rows = [
            {"trained on": f"{seg['wsss']['labels']} pseudo labels", "miou": seg["wsss"]["miou"]},
            {"trained on": "ground truth (full supervision)", "miou": seg["full"]["miou"]},
        ]
        out += ["Segmentation (val split)", markdown_table(rows, ["trained on", "miou"])]
        out += [f"weak / full: {100 * seg['ratio']:.1f} %", ""]
    out += ["Seconds: " + ", ".join(f"{k} {v}" for k, v in metrics["seconds"].items())]
    out += [f"Peak memory: {metrics['peak_rss_mb']:.0f} MiB"]
    return "\n".join(out)


def load_metrics(cfg: Config) -> dict[str, Any]:
    """The metrics.json of ``cfg``'s run."""
    return load_json(RunStore.for_config(cfg).root / "metrics.json")
