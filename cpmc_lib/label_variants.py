"""Pseudo labels under other settings, scored beside the stage's own (chapter 7), nothing saved.

The pseudo-label stage (:mod:`cpmc_lib.pseudo`) makes one set of labels for one configuration.
The chapter asks what other choices would have given on the same images: the maps of another CAM
method (:func:`compare`), another ignore zone (:func:`compare_zones`), and example rows to look at
(:func:`examples`). Each reads the maps from the run store (:func:`cpmc_lib.pipeline.ensure`
makes them) and labels them with the stage's own :func:`~cpmc_lib.pseudo.make_labels`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .config import Config
from .datasets import build_dataset
from .labels import crf_pseudo_label, image_threshold, label_planes, pseudo_label, rule_threshold
from .mapfile import load_map
from .negatives import NegativeBank, build_bank
from .plots import colorize, to_hwc_uint8
from .pseudo import make_labels, part_assigner, part_folder, stage_crf_labels

if TYPE_CHECKING:
    from .store import RunStore

__all__ = ["IRN_PLANES", "compare", "compare_zones", "examples"]

# IRN's confident planes, conf_fg 0.30 / conf_bg 0.05, as a fixed plane and a band around it.
IRN_PLANES = {"pseudo.threshold_rule": "fixed", "pseudo.bg_threshold": 0.3, "pseudo.band": (0.05 / 0.3, 1.0)}


def compare(
    cfg: Config,
    store: RunStore,
    methods: tuple[str, ...],
    limit: int = 0,
    progress: bool = True,
    negatives: NegativeBank | None = None,
) -> dict[str, dict[str, Any]]:
    """Pseudo-label scores of several CAM methods (each under ``pseudo.threshold_rule``), nothing saved.

    ``limit`` scores the first images only. For ``pseudo.method`` the labels after the CRF are read
    from the pseudo stage when it finished with ``cfg`` (:func:`~cpmc_lib.pseudo.stage_crf_labels`):
    the same labels, not made twice. Under ``pseudo.negatives`` every method's labels are ignored
    where the run's negative prototypes say so: pass ``negatives``
    (:func:`cpmc_lib.negatives.build_bank`) to build the bank once for several calls; None builds it here.
    """
    out, parts = {}, part_folder(cfg, store)
    if cfg.pseudo.negatives and negatives is None:
        negatives = build_bank(cfg, store, progress)
    for m in methods:
        folder, metrics = store.require_maps(cfg, m)
        saved = stage_crf_labels(cfg, store) if m == cfg.pseudo.method else None
        out[m] = make_labels(
            cfg, folder, rule_threshold(cfg, metrics), limit=limit, progress=progress, crf_labels=saved,
            part_folder=parts, negatives=negatives if cfg.pseudo.negatives else None,
        )  # fmt: skip
    return out


def compare_zones(
    cfg: Config,
    store: RunStore,
    default: dict[str, Any],
    limit: int = 0,
    progress: bool = True,
    negatives: NegativeBank | None = None,
) -> dict[str, dict[str, Any]]:
    """``pseudo.method``'s labels without an ignore zone, with ``pseudo.band`` and with IRN's fixed
    planes (0.30 / 0.05, :data:`IRN_PLANES`), by name; ``default`` is :func:`compare`'s result for
    ``cfg`` on the same images, reused for the configuration it equals (the band row is left out
    when the band is off). ``negatives``: as in :func:`compare`."""
    method = cfg.pseudo.method
    zones = {"no zone": cfg.replace(**{"pseudo.band": (1.0, 1.0)}),
             f"band {list(cfg.pseudo.band)}": cfg if tuple(cfg.pseudo.band) != (1.0, 1.0) else None,
             "IRN 0.30 / 0.05 (fixed)": cfg.replace(**IRN_PLANES)}  # fmt: skip
    return {
        name: default if c == cfg else compare(c, store, (method,), limit, progress, negatives)[method]
        for name, c in zones.items()
        if c is not None
    }


def examples(
    cfg: Config, store: RunStore, samples: list[dict[str, Any]], threshold: float | None
) -> tuple[list[list[np.ndarray]], list[int]]:
    """Rows of [image, ground truth, pseudo label, pseudo label + CRF] of ``cfg.pseudo.method``, and
    the classes any of their masks shows (for the figure's legend; 255: ignored).

    Args:
        samples: cam-split dataset items without transform (``img`` uint8 (3, H, W), ``mask``, ``name``).
        threshold: the background plane used for the labels; None: per image by
            ``pseudo.threshold_rule`` (the stage result's ``threshold`` is None then).
    """
    p = cfg.pseudo
    folder, parts = store.maps_dir(p.method), part_folder(cfg, store)
    names = build_dataset(cfg, cfg.data.cam_split).class_names  # the mask colours follow the class names
    rows, shown = [], set()
    for s in samples:
        saved = load_map(folder, s["name"])
        cam, keys = saved.cam.astype(np.float32), saved.keys
        img = to_hwc_uint8(s["img"])
        thr = image_threshold(cam, p.threshold_rule) if threshold is None else threshold
        fg, bg = label_planes(thr, p)
        assign = part_assigner(parts, s["name"], cam, keys, thr, p)
        plain = assign(pseudo_label(cam, keys, fg, bg))
        crf = assign(crf_pseudo_label(img, cam, keys, cfg.crf, fg, bg))
        rows.append([img, colorize(s["mask"], names), colorize(plain, names), colorize(crf, names)])
        shown |= {int(v) for m in (np.asarray(s["mask"]), plain, crf) for v in np.unique(m)}
    return rows, sorted(shown)
