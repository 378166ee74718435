"""The dataset card's measurements of the benchmark: what a trained classifier's maps show.

The synthetic benchmark's card (``dataset_card.json``, :func:`cpmc_lib.synth.record_calibration`)
records how hard the data set is for the classifier it was tuned with: classifier-CAM mIoU, part
and body recall, context activation, and where the prototype CAM fails relative to the classifier
CAM. :func:`benchmark_calibration` measures them for a config (chapter 3 shows them).

Example:
    >>> for m in ("cam", "proto"):  # doctest: +SKIP
    ...     cl.pipeline.ensure(cfg, "cams", store, method=m)
    >>> calibration = benchmark_calibration(cfg, store)  # doctest: +SKIP
    >>> calibration["recall_part"] - calibration["recall_body"]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from .config import Config
from .datasets import build_dataset
from .diagnostics import fn_fp_fractions
from .io import load_json, save_json
from .mapfile import load_map
from .metrics import cam_to_mask
from .store import RunStore

__all__ = ["benchmark_calibration", "compare_failures"]


def compare_failures(store: RunStore, dataset, a: str = "cam", b: str = "proto") -> dict[str, float]:
    """The failures map ``b`` adds relative to map ``a``, over a split, each at its best threshold.

    The dataset card's "failure modes of prototype CAMs" (``a="cam"``, ``b="proto"``): ``fn`` is the
    percent of object pixels the classifier CAM labels right and the prototype CAM does not,
    ``fp`` the percent of background pixels the prototype CAM marks as object while the classifier
    CAM calls them background (:func:`cpmc_lib.diagnostics.fn_fp_fractions`, summed over images).

    A pass over the whole split: cached beside ``b``'s maps (``failures_vs_<a>.json``) for the two
    methods' settings and the images, so a second build of the book reads it back.
    """
    metrics = {m: load_json(store.maps_dir(m) / "metrics.json") for m in (a, b)}
    thr = {m: metrics[m]["threshold"] for m in (a, b)}
    names = list(dataset.names)
    key = {"maps": {m: metrics[m].get("method_hash") for m in (a, b)}, "thresholds": thr,
           "images": hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]}  # fmt: skip
    cache = store.maps_dir(b) / f"failures_vs_{a}.json"
    if cache.is_file():
        saved = load_json(cache)
        if saved.get("key") == key:
            return saved["failures"]
    sums = {"n_fn": 0, "n_fp": 0, "n_object": 0, "n_background": 0}
    for name in names:
        masks = []
        for m in (a, b):
            saved = load_map(store.maps_dir(m), name)
            masks.append(cam_to_mask(saved.cam.astype(np.float32), saved.keys, thr[m]))
        gt = dataset.read_mask(dataset.mask_path(name))
        r = fn_fp_fractions(masks[0], masks[1], gt)
        for k in sums:
            sums[k] += r[k]
    failures = {
        "fn": 100 * sums["n_fn"] / max(sums["n_object"], 1),
        "fp": 100 * sums["n_fp"] / max(sums["n_background"], 1),
        "thresholds": thr,
    }
    save_json(cache, {"key": key, "failures": failures})
    return failures


def benchmark_calibration(cfg: Config, store: RunStore) -> dict[str, Any]:
    """What the dataset card records about the benchmark, measured with ``cfg``'s classifier.

    Classifier-CAM mIoU (best threshold), part and body recall, context and neutral activation, and
    the two failures of the prototype CAM relative to the classifier CAM (:func:`compare_failures`).
    Reads the two maps from the run store (``cl.pipeline.ensure(cfg, "cams", store, method=m)``
    makes them).

    Raises:
        StageMissingError: the classifier CAMs or the prototype CAMs are missing.
    """
    cam = store.require_maps(cfg, "cam")[1]
    store.require_maps(cfg, "proto")
    p = cam["pathology"]
    fails = compare_failures(store, build_dataset(cfg, cfg.data.cam_split), "cam", "proto")
    return {
        "classifier": {"config_hash": store.key(cfg, "classifier"), **store.result("classifier")},
        "cam_miou": cam["miou"],
        "cam_threshold": cam["threshold"],
        "recall_part": p["recall_part"],
        "recall_body": p["recall_body"],
        "act_context": p["act_context"],
        "act_neutral": p["act_neutral"],
        "proto_fn_of_cam_objects": fails["fn"],
        "proto_fp_on_cam_background": fails["fp"],
        "targets": "CAM mIoU about 35-55; part recall >= body recall + 15; context >= 1.5 x neutral activation",
    }
