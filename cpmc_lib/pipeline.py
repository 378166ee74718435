"""The whole pipeline on one screen, IRN's ``run_sample.py`` with types.

Each stage module (:mod:`~cpmc_lib.pretrain`, :mod:`~cpmc_lib.classifier`, :mod:`~cpmc_lib.cams`,
:mod:`~cpmc_lib.pseudo`, :mod:`~cpmc_lib.segmentation`) exposes one ``run(cfg, store)`` that
reads its inputs from the run store and never runs another stage. :func:`ensure` is the one
place that knows their order: the command line, the notebooks and the sweeps call it to make sure
a stage's inputs exist. :func:`run` (``python -m cpmc_lib pipeline --config ...``) runs every
stage, each reusing what the run store already holds for its config, and writes
``runs/<run>/metrics.json``::

    {"dataset": {...card...}, "config_hash": "...",
     "cams": {"cam": {"miou", "threshold", "precision", "recall", "pathology", "gt_free"}, "refined": ...,
              "proto": ..., "cpmc": ..., "gradcam": ..., "gradcampp": ..., "layercam": ...},
     "pseudo": {"threshold", "threshold_rule", "split", "images", "scored_on", "scored_images",
                "cpmc": {"miou", "iou", "ignore_frac", "pathology", "pathology_by_class", ..},
                "cpmc_crf": {..}},
     "seg": {"split", "wsss": {"miou", "iou", "curve", "pathology", "pathology_by_class", ..},
             "full": {..}, "ratio": ..},
     "seconds": {"<stage>": ..}, "stage_seconds": {..}, "peak_rss_mb": ..}

``cams.<m>.miou`` is each map at its best threshold against the ground truth (IRN's evaluation
protocol, an oracle view); ``cams.<m>.gt_free`` scores the same maps at the decision the pseudo
labels take, ``pseudo.threshold_rule``, which reads no ground truth (for the peers of
:data:`PEERS` only when one of them is ``pseudo.method``). Pseudo labels are made for the
seg split (``cfg.seg_split()``, VOC: train_aug) and scored on the cam split's images with masks.
``iou`` is per class (index = class id); ``pathology`` and ``pathology_by_class`` exist on data
with diagnostic masks (:class:`~cpmc_lib.diagnostics.LabelPathologyMeter`).

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

from . import affinity, cams, classifier, pretrain, pseudo, segmentation, synth
from .config import Config, load_config
from .datasets import build_dataset
from .distributed import barrier, is_main
from .io import load_json, save_json
from .metrics import json_iou
from .report import markdown_table, scored_labels
from .store import RunStore, stage_hash

__all__ = [
    "CAM_REPORT",
    "PEERS",
    "STAGES",
    "UNTIL",
    "ensure",
    "ensure_data",
    "format_metrics",
    "load_metrics",
    "peak_rss_mb",
    "run",
    "setup",
]

# The stages in the order they run; "segmentation_gt" (the fully supervised ceiling) reads only
# the data.
STAGES = ("pretrain", "classifier", "cams", "affinity", "pseudo", "segmentation", "segmentation_gt")

# The CAM methods the pipeline scores: ours first, then the peer baselines.
PEERS = ("gradcam", "gradcampp", "layercam")
CAM_REPORT = ("cam", "refined", "proto", "cpmc", *PEERS)
_CAM_KEYS = ("miou", "threshold", "precision", "recall", "pathology")


def ensure(
    cfg: Config, stage: str, store: RunStore | None = None, method: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run ``stage`` for ``cfg`` after every stage it reads, each reused when the store has it.

    Args:
        stage: one of :data:`STAGES`.
        method: the CAM method of "cams" (default "cam") or "pseudo" (default ``pseudo.method``).

    Returns:
        The stage's ``run`` result.
    """
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r} is not one of {', '.join(STAGES)}")
    store = store or RunStore.for_config(cfg)
    if stage == "segmentation_gt":
        if cfg.segmentation_uses_pretrain_stage():
            pretrain.run(cfg, store, progress=progress)
        return segmentation.run(cfg, store, labels="gt", progress=progress)
    # The ImageNet stand-in: only a classifier still to train reads it.
    if stage == "pretrain" or (cfg.uses_pretrain_stage() and not store.has("classifier", cfg)):
        result = pretrain.run(cfg, store, progress=progress)
        if stage == "pretrain":
            return result
    result = classifier.run(cfg, store, progress=progress)
    if stage == "classifier":
        return result
    if stage == "cams":
        return cams.run(cfg, store, method=method or "cam", progress=progress)
    if method is not None and method != cfg.pseudo.method:
        cfg = cfg.replace(**{"pseudo.method": method})
    cams.run(cfg, store, method=cfg.pseudo.method, progress=progress)
    # the seg split's images outside the cam split (none by default) need maps for their labels
    cams.map_seg_split(cfg, store, method=cfg.pseudo.method, progress=progress)
    if cfg.pseudo.assign == "parts" and cfg.pseudo.method != "cam":  # the classifier CAMs locate the parts
        cams.run(cfg, store, method="cam", progress=progress)
        cams.map_seg_split(cfg, store, method="cam", progress=progress)
    if stage == "affinity" or cfg.affinity.enabled:
        result = affinity.run(cfg, store, progress=progress)
        if stage == "affinity":
            return result
    result = pseudo.run(cfg, store, progress=progress)
    if stage == "pseudo":
        return result
    if cfg.segmentation_uses_pretrain_stage():  # reused when the classifier's pretraining made it
        pretrain.run(cfg, store, progress=progress)
    return segmentation.run(cfg, store, labels="pseudo", progress=progress)


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

    Example:
        >>> cfg, store = setup("configs/default.yaml", ["classifier.epochs=5"])  # doctest: +SKIP
    """
    cfg = load_config(config_path, overrides)
    ensure_data(cfg)
    return cfg, RunStore.for_config(cfg)


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MiB (Linux units)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return max(own, kids) / scale


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

    card = timed("data", lambda: ensure_data(cfg, progress))
    clf = timed("classifier", lambda: ensure(cfg, "classifier", store, progress=progress))
    cam_results = {
        m: timed(f"cams_{m}", lambda m=m: ensure(cfg, "cams", store, method=m, progress=progress))
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
        metrics["cams"][m]["gt_free"] = timed(f"gt_free_{m}", lambda m=m: pseudo.rule_scores(cfg, store, m))
    stage_seconds = {"classifier": clf.get("seconds")}
    if cfg.pretrain.enabled and (store.path("pretrain") / "manifest.json").is_file():
        stage_seconds = {"pretrain": store.result("pretrain").get("seconds"), **stage_seconds}
    for m, r in cam_results.items():  # methods made in one pass share one entry ("cams_a+b+c")
        stage_seconds["cams_" + "+".join(r.get("made_with") or [m])] = r.get("seconds")
    if until != "cams" and cfg.affinity.enabled:  # the pseudo-label maps after the random walk
        aff = timed("affinity", lambda: ensure(cfg, "affinity", store, progress=progress))
        metrics["affinity"] = {
            **{k: aff[k] for k in (*_CAM_KEYS, "method", "seed_share") if k in aff},
            "gt_free": timed("gt_free_affinity", lambda: pseudo.rule_scores(cfg, store, "affinity")),
        }
        stage_seconds["affinity"] = aff.get("seconds")
    if until != "cams":
        pl = timed("pseudo", lambda: ensure(cfg, "pseudo", store, progress=progress))
        method = pl["method"]
        metrics["pseudo"] = {
            # threshold: the plane (None: per image); threshold_rule: fixed, or the per-image rule's name
            "threshold": pl["threshold"],
            "threshold_rule": pl["threshold_rule"],
            "threshold_mean": pl.get("threshold_mean"),
            "affinity": bool(pl.get("affinity")),  # the maps went through the random walk
            # pseudo.negatives: the classes that had negative prototypes (cpmc_lib.negatives)
            **({"negatives": pl["negatives"]} if "negatives" in pl else {}),
            # ... and the % of images without each class where its CAM fired (firing_outliers' input)
            **({"negative_firing": pl["negative_firing"]} if "negative_firing" in pl else {}),
            # labels made for `split`; the scores below cover `scored_images` images of `scored_on`
            **{k: pl.get(k) for k in ("split", "images", "scored_on", "scored_images")},
            **{
                f"{method}{suffix}": {
                    # scored on the labelled pixels; ignore_frac: the share labelled 255 (pseudo.band)
                    **{k: pl[f"{k}{suffix}"] for k in ("miou", "precision", "recall", "ignore_frac")},
                    # which pixels the labels get wrong (synthetic benchmark: its diagnostic masks),
                    # and per class; stages older than these keys leave them out
                    **{
                        k: pl[f"{k}{suffix}"]
                        for k in ("iou", "pathology", "pathology_by_class") if f"{k}{suffix}" in pl
                    },
                }
                for suffix in ("", "_crf")
            },
        }
        stage_seconds["pseudo"] = pl.get("seconds")
    if until == "seg":
        wsss = timed("seg_wsss", lambda: ensure(cfg, "segmentation", store, progress=progress))
        full = timed("seg_full", lambda: ensure(cfg, "segmentation_gt", store, progress=progress))
        # per-class IoU, and where each network goes wrong on val (synthetic benchmark: its diagnostic
        # masks), also per class
        detail = {
            k: {name: r[f"val_{name}"] for name in ("pathology", "pathology_by_class") if f"val_{name}" in r}
            for k, r in (("wsss", wsss), ("full", full))
        }
        for k, r in (("wsss", wsss), ("full", full)):
            if "val_iou" in r:
                detail[k]["iou"] = json_iou(r["val_iou"])
        metrics["seg"] = {
            "split": cfg.seg_split(),  # both networks train on it; scored on val
            "wsss": {
                "miou": wsss["val_miou"],
                "labels": f"{method}{'_crf' if pl.get('crf') else ''}",
                "train_images": wsss.get("train_images"),
                "curve": wsss.get("curve", []),
                **detail["wsss"],
            },
            "full": {
                "miou": full["val_miou"],
                "train_images": full.get("train_images"),
                "curve": full.get("curve", []),
                **detail["full"],
            },
            "ratio": wsss["val_miou"] / full["val_miou"] if full["val_miou"] else float("nan"),
        }
        if "val_miou_crf" in wsss and "val_miou_crf" in full:  # segmentation.test_crf: both networks + dense CRF
            metrics["seg"]["wsss"]["miou_crf"] = wsss["val_miou_crf"]
            metrics["seg"]["full"]["miou_crf"] = full["val_miou_crf"]
            # the field's protocol (DeepLab + CRF, both networks): SIPE's 0.89 is against a ceiling with CRF
            metrics["seg"]["ratio_crf"] = wsss["val_miou_crf"] / full["val_miou_crf"] if full["val_miou_crf"] else float("nan")
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
        rows = [{"labels": k, **v} for k, v in scored_labels(pl).items()]
        thr = "per image" if pl.get("threshold") is None else pl["threshold"]
        where = (f"{pl['images']} {pl['split']} images, scored on {pl['scored_images']} of {pl['scored_on']}"
                 if pl.get("split") else "cam split")  # fmt: skip
        out += [
            f"Pseudo labels ({where}; background rule {pl.get('threshold_rule')}, threshold {thr})",
            markdown_table(rows, ["labels", "miou", "precision", "recall"]),
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
