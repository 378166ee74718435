"""Stage "pseudo": pixel pseudo labels of the segmentation split from one CAM method's saved maps.

For each image of the segmentation split (``cfg.seg_split()``: by default the cam split; VOC:
train_aug, as IRN, SIPE and SFC make their labels) the rules of :mod:`cpmc_lib.labels` turn the
saved maps of ``pseudo.method`` (:mod:`cpmc_lib.mapfile`) into a label map: the background plane
of ``pseudo.threshold_rule`` (no ground truth), the ignore zone of ``pseudo.band``, the dense CRF,
the part-anchored class assignment (``pseudo.assign``, reading the classifier CAMs of the same
images) and, with ``pseudo.negatives``, the negative prototypes of :mod:`cpmc_lib.negatives`.

Scores (:func:`make_labels`): :func:`cpmc_lib.metrics` mIoU over the *labelled* pixels (ignore
pixels are left out, ``ignore_frac`` says how many), without and with the CRF, on the images of the
cam split that have a mask (WSSS convention: IRN scores its train_aug labels on train), so they
compare with the CAM scores; ``scored_on`` and ``scored_images`` say so. The other images are
labelled, not scored. :func:`rule_scores` scores a CAM method's maps at the same ground-truth-free
decision.

Outputs in ``runs/<run>/pseudo/``: ``labels/<name>.png`` (VOC palette PNGs, 255 = ignore; the CRF
labels when ``pseudo.crf``) and the manifest whose result is :func:`run`'s dict.

Example:
    >>> result = run(cfg, store)  # doctest: +SKIP
    >>> result["miou"], result["miou_crf"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import distributed
from .config import Config, PseudoConfig
from .crf import crf_map
from .datasets import build_dataset
from .diagnostics import FpSplitMeter, LabelPathologyMeter, PathologyMeter
from .io import IGNORE_INDEX, load_json, read_image_rgb, read_mask_png, save_json, save_mask_png
from .labels import (
    assign_to_parts,
    cam_probs,
    combine_confident,
    image_threshold,
    label_planes,
    pseudo_label,
    rule_threshold,
)
from .mapfile import load_map
from .metrics import ConfusionMeter, cam_to_mask, json_iou
from .negatives import NegativeBank, build_bank, ignore_negatives
from .runtime import pick_device

if TYPE_CHECKING:
    from .store import RunStore

__all__ = [
    "fp_split_scores", "labels_dir", "make_labels", "part_assigner", "part_folder", "rule_scores", "run", "stage_crf_labels",
]  # fmt: skip


def labels_dir(store: RunStore) -> Path:
    """Folder of the pseudo label PNGs of a run."""
    return store.path("pseudo") / "labels"


def run(cfg: Config, store: RunStore, progress: bool = True) -> dict[str, Any]:
    """Stage "pseudo": pseudo labels of every seg-split image from ``pseudo.method``'s saved maps.

    Reads the maps of ``pseudo.method`` (and, with ``pseudo.assign="parts"``, the classifier CAMs)
    for the whole seg split (``cpmc_lib.cams.run(..., seg_split=True)`` makes them).

    Returns:
        :func:`make_labels`'s dict for the seg split, plus ``seconds`` and ``labels`` (the PNG folder).
    """
    with store.stage("pseudo", cfg, device=str(pick_device(cfg.device))) as st:
        if not st.done:
            start = time.perf_counter()
            folder, cam_metrics = store.require_maps(cfg, cfg.pseudo.method, seg_split=True)
            bank = build_bank(cfg, store, progress) if cfg.pseudo.negatives else None
            result = make_labels(
                cfg, folder, rule_threshold(cfg, cam_metrics), out=st.path / "labels", progress=progress,
                split=cfg.seg_split(), part_folder=part_folder(cfg, store, seg_split=True), negatives=bank,
            )  # fmt: skip
            result.update(seconds=round(time.perf_counter() - start, 1), labels=str(st.path / "labels"))
            st.result = result
    return st.result


def part_folder(cfg: Config, store: RunStore, seg_split: bool = False) -> Path | None:
    """The classifier CAMs that ``pseudo.assign="parts"`` reads (:func:`~cpmc_lib.labels.assign_to_parts`);
    None under ``"argmax"``.

    Raises:
        StageMissingError: the classifier CAMs (of the whole seg split, with ``seg_split``) are missing.
    """
    if cfg.pseudo.assign != "parts":
        return None
    return store.require_maps(cfg, "cam", seg_split=seg_split)[0]


def part_assigner(
    part_folder: Path | None, name: str, cam: np.ndarray, keys: np.ndarray, plane: float, p: PseudoConfig
) -> Callable[[np.ndarray], np.ndarray]:
    """label -> label for one image: :func:`~cpmc_lib.labels.assign_to_parts` with its classifier
    CAMs read from ``part_folder``, or the identity when ``part_folder`` is None or the image has
    under two classes."""
    if part_folder is None or len(keys) < 2:
        return lambda label: label
    saved = load_map(part_folder, name)
    if not np.array_equal(saved.keys, np.asarray(keys)):
        raise ValueError(
            f"{part_folder / name}: classes {saved.keys.tolist()}, the maps' {list(keys)}; recompute the CAMs"
        )
    part = saved.cam.astype(np.float32)
    return lambda label: assign_to_parts(label, cam, keys, part, plane, p.part_share, p.contest_share)


def _read_maps(folder: Path, name: str, img: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """One image's maps as float32 and its class ids, checked against the image."""
    saved = load_map(folder, name)
    cam = saved.cam.astype(np.float32)
    if img is not None and cam.shape[1:] != img.shape[:2]:
        raise ValueError(f"{folder / name}: maps are {cam.shape[1:]} but the image is {img.shape[:2]}")
    if not np.isfinite(cam).all():
        raise ValueError(f"{folder / name}: maps hold NaN or infinite values; recompute the CAMs")
    return cam, saved.keys


class _Labeller:
    """The labels of one split's images, without and with the CRF (:func:`make_labels`)."""

    def __init__(self, cfg: Config, ds, folder: Path, threshold: float | None, rule: str, names: list[str],
                 part_folder: Path | None) -> None:  # fmt: skip
        self.cfg, self.ds, self.folder, self.threshold, self.rule = cfg, ds, folder, threshold, rule
        self.names, self.part_folder = names, part_folder
        fixed = None if threshold is None else label_planes(threshold, cfg.pseudo)
        # one CRF per image without an ignore zone, two with one (IRN)
        self.n_planes = 1 if (fixed[0] == fixed[1] if fixed else tuple(cfg.pseudo.band) == (1.0, 1.0)) else 2
        self.planes = None if fixed is None else list(fixed)
        self.planes_used: list[float] = []

    def plain(self, read_images: bool = True) -> Iterator[tuple]:
        """Per image: (name, image, maps, keys, label without CRF, class assignment)."""
        for name in self.names:
            img = None
            if read_images:  # what the dataset reads: upright by its EXIF orientation
                img = np.asarray(read_image_rgb(self.ds.image_path(name)))
            cam, keys = _read_maps(self.folder, name, img)
            thr = image_threshold(cam, self.rule) if self.threshold is None else self.threshold
            self.planes_used.append(thr)
            fg, bg = label_planes(thr, self.cfg.pseudo)
            assign = part_assigner(self.part_folder, name, cam, keys, thr, self.cfg.pseudo)
            yield name, img, cam, keys, (fg, bg), assign(pseudo_label(cam, keys, fg, bg)), assign

    def with_crf(self, progress: bool) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(name, label, label after the CRF) per image; the CRFs run in worker processes."""

        def inputs():  # per image one CRF per plane; the label without CRF rides along as the tag
            for name, img, cam, keys, (fg, bg), label, assign in self.plain():
                ids = np.concatenate([[0], keys]).astype(np.int64)
                for plane in (fg,) if self.n_planes == 1 else (fg, bg):
                    yield img, cam_probs(cam, plane), (name, ids, label, assign)

        total = len(self.names) * self.n_planes
        posts = crf_map(inputs(), self.cfg.crf, total, progress, desc=f"pseudo {self.folder.name}")
        for post_hi, (name, ids, label, assign) in posts:
            post_lo = next(posts)[0] if self.n_planes == 2 else post_hi
            yield name, label, assign(combine_confident(ids[post_hi.argmax(0)], ids[post_lo.argmax(0)]))

    def with_saved_crf(self, crf_labels: Path) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """The same, the labels after the CRF read from ``crf_labels`` instead of made again."""
        for name, _img, _cam, _keys, _planes, label, _assign in self.plain(read_images=False):
            label_crf = read_mask_png(crf_labels / f"{name}.png")
            if label_crf.shape != label.shape:
                raise ValueError(f"{crf_labels / name}.png is {label_crf.shape}, the maps {label.shape}")
            yield name, label, label_crf


class _LabelScores:
    """mIoU over the labelled pixels, the ignored share and the pathologies, without and with the CRF;
    and the mIoU with the ignored pixels counted as background (what the labels cover)."""

    SUFFIXES = ("", "_crf")

    def __init__(self, num_classes: int) -> None:
        self.meters = {s: ConfusionMeter(num_classes) for s in self.SUFFIXES}
        self.covered = {s: ConfusionMeter(num_classes) for s in self.SUFFIXES}
        self.pathology = {s: LabelPathologyMeter() for s in self.SUFFIXES}
        self.ignored = {s: 0 for s in self.SUFFIXES}
        self.pixels = self.scored = 0

    def update(self, labels: tuple[np.ndarray, np.ndarray], mask: np.ndarray | None, diag: np.ndarray | None) -> None:
        gt = None if mask is None else torch.from_numpy(mask.astype(np.int64))
        self.scored += gt is not None
        self.pixels += labels[0].size
        for suffix, lab in zip(self.SUFFIXES, labels, strict=True):
            lab = torch.from_numpy(lab.astype(np.int64))
            self.ignored[suffix] += int((lab == IGNORE_INDEX).sum())
            if gt is not None:  # ignore pixels of the label are left out of the score
                keep = lab != IGNORE_INDEX
                self.meters[suffix].update(torch.where(keep, lab, 0), torch.where(keep, gt, IGNORE_INDEX))
                self.covered[suffix].update(torch.where(keep, lab, 0), gt)  # ignored = background
                if diag is not None:
                    self.pathology[suffix].update(lab, gt, diag)

    def compute(self, planes_used: list[float]) -> dict[str, Any]:
        """The scores summed over every rank, and ``threshold_mean`` and ``scored_images``."""
        for meter in (*self.meters.values(), *self.covered.values()):
            meter.confusion = distributed.all_reduce_tensor(meter.confusion)
        for patho in self.pathology.values():
            patho.all_reduce()
        counts = distributed.all_reduce_sum(
            {"pixels": self.pixels, "scored": self.scored, "plane_sum": sum(planes_used), "plane_n": len(planes_used),
             **{f"ignored{k}": v for k, v in self.ignored.items()}}
        )  # fmt: skip
        result: dict[str, Any] = {"threshold_mean": counts["plane_sum"] / max(counts["plane_n"], 1)}
        for suffix, meter in self.meters.items():
            scores = meter.compute()
            result.update({
                f"miou{suffix}": scores["miou"],
                f"precision{suffix}": scores["precision"],
                f"recall{suffix}": scores["recall"],
                f"ignore_frac{suffix}": counts[f"ignored{suffix}"] / max(counts["pixels"], 1),
                f"iou{suffix}": json_iou(scores["iou"]),
                # every pixel scored, the ignored ones as background: what the labels say about the image
                f"miou_bg{suffix}": self.covered[suffix].compute()["miou"],
                f"iou_bg{suffix}": json_iou(self.covered[suffix].compute()["iou"]),
            })  # fmt: skip
            if self.pathology[suffix].pixels:
                result[f"pathology{suffix}"] = self.pathology[suffix].compute()
                result[f"pathology_by_class{suffix}"] = self.pathology[suffix].compute_by_class()
        result["scored_images"] = round(counts["scored"])
        return result


def make_labels(
    cfg: Config,
    folder: Path,
    threshold: float | None,
    out: Path | None = None,
    limit: int = 0,
    progress: bool = True,
    split: str | None = None,
    crf_labels: Path | None = None,
    part_folder: Path | None = None,
    negatives: NegativeBank | None = None,
) -> dict[str, Any]:
    """Pseudo labels of a split from the maps in ``folder``, scored without and with CRF.

    Args:
        folder: a CAM method's folder of map files (:mod:`cpmc_lib.mapfile`).
        threshold: the background plane (``pseudo.band`` sets the ignore zone around it); None: per
            image by ``pseudo.threshold_rule`` (:func:`~cpmc_lib.labels.image_threshold`).
        out: where to save the label PNGs (the CRF labels when ``pseudo.crf``); None saves nothing.
        limit: score only the first ``limit`` images (0 = all), e.g. to compare methods quickly.
        split: the images to label (None: the cam split); ``folder`` must hold their maps.
        crf_labels: a folder of these very labels after the CRF (``<name>.png``: the pseudo stage's
            PNGs, made from the same maps with the same settings); read instead of running the CRF again.
        part_folder: the classifier CAMs of the same images: contested object pixels of both labels
            go to the class whose part is nearest (:func:`~cpmc_lib.labels.assign_to_parts`, with
            ``pseudo.part_share`` / ``contest_share``); None keeps the maps' arg-max.
        negatives: the run's negative prototypes and masks (:func:`cpmc_lib.negatives.build_bank`):
            both labels are ignored where a class looks like its negatives; None leaves them.

    Returns:
        dict with ``miou``, ``precision``, ``recall`` (over the labelled pixels), ``ignore_frac``
        (the share labelled 255), ``miou_bg`` and ``iou_bg`` (every pixel, the ignored ones counted
        as background), ``iou`` (per class),
        ``pathology`` and ``pathology_by_class`` (with diagnostic masks:
        :class:`~cpmc_lib.diagnostics.LabelPathologyMeter`) and the same with ``_crf``,
        plus ``method``, ``threshold`` (None for a per-image rule), ``threshold_rule``,
        ``threshold_mean`` (mean plane over the images), ``planes`` (None per image), ``assign``,
        ``negatives`` and ``negative_firing`` (with ``negatives``), ``crf``, ``split``, ``images``
        (labelled), ``scored_on`` (the cam split: only its images with a mask are scored) and
        ``scored_images``.
    """
    p = cfg.pseudo
    # A threshold passed in is the oracle's value under that rule, else a fixed plane.
    rule = p.threshold_rule if threshold is None or p.threshold_rule == "oracle" else "fixed"
    split = split or cfg.data.cam_split
    ds = build_dataset(cfg, split)
    # Scored: the cam split's images (with a mask), like the CAMs; the others are only labelled.
    cam_names = set(ds.names if split == cfg.data.cam_split else build_dataset(cfg, cfg.data.cam_split).names)
    every = ds.names[:limit] if limit else ds.names
    names = distributed.shard(every)  # under torchrun: this rank's images; scores are summed below
    labeller = _Labeller(cfg, ds, folder, threshold, rule, names, part_folder)
    scores = _LabelScores(cfg.data.num_classes)
    bar = progress and distributed.is_main()
    pairs = labeller.with_crf(bar) if crf_labels is None else labeller.with_saved_crf(crf_labels)
    for name, label, label_crf in pairs:
        if negatives is not None:
            keys, drop = negatives.masks[name]
            label, label_crf = (ignore_negatives(lab, keys, drop) for lab in (label, label_crf))
        if out is not None:
            save_mask_png(out / f"{name}.png", label_crf if p.crf else label)
        scores.update((label, label_crf), *(ds.targets(name) if name in cam_names else (None, None)))
    result: dict[str, Any] = {
        "method": folder.name,
        "threshold": threshold,
        "threshold_rule": rule,
        "planes": labeller.planes,
        "assign": "argmax" if part_folder is None else "parts",
    }
    if negatives is not None:  # which classes had negative prototypes, and how many
        result["negatives"] = negatives.summary(list(ds.class_names))
        result["negative_firing"] = negatives.firing(list(ds.class_names))
    result.update(scores.compute(labeller.planes_used))
    result.update(crf=p.crf, split=split, images=len(every), scored_on=cfg.data.cam_split)
    return result


def rule_scores(cfg: Config, store: RunStore, method: str) -> dict[str, Any]:
    """A CAM method's maps scored at the ground-truth-free decision of ``pseudo.threshold_rule``.

    The cams stage scores every map at its best threshold (IRN's protocol, an oracle view); this is
    what the same maps give when the background is decided as the pseudo labels decide it. Cached
    beside the maps (``rule_scores.json``) for the method's settings and the rule.

    Returns:
        dict with ``rule``, ``threshold`` (None per image), ``threshold_mean``, ``miou``,
        ``precision``, ``recall`` and, on data with diagnostic masks, ``pathology``
        (:class:`~cpmc_lib.diagnostics.PathologyMeter` at each image's threshold).
    """
    folder, metrics = store.require_maps(cfg, method)
    p = cfg.pseudo
    threshold = rule_threshold(cfg, metrics)
    key = {"method_hash": metrics.get("method_hash"), "rule": p.threshold_rule, "value": threshold}
    cache = folder / "rule_scores.json"
    if cache.is_file():
        saved = load_json(cache)
        if saved.get("key") == key:
            return saved["scores"]
    ds = build_dataset(cfg, cfg.data.cam_split)
    meter, patho, planes = ConfusionMeter(cfg.data.num_classes), None, []
    for name in ds.names:
        cam, keys, thr = _cut(folder, name, p.threshold_rule, threshold)
        planes.append(thr)
        gt, diag = ds.targets(name)  # the masks only: the image is not needed
        if gt is None:
            continue
        meter.update(cam_to_mask(cam, keys, thr), gt)
        if diag is not None:
            patho = patho or PathologyMeter(thr)
            patho.update(cam, keys, gt, diag, threshold=thr)
    scores = meter.compute()
    out: dict[str, Any] = {
        "rule": p.threshold_rule,
        "threshold": threshold,
        "threshold_mean": float(np.mean(planes)) if planes else None,
        **{k: scores[k] for k in ("miou", "precision", "recall")},
    }
    if patho is not None:
        out["pathology"] = patho.compute()
    save_json(cache, {"key": key, "scores": out})
    return out


def _cut(folder: Path, name: str, rule: str, fixed: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    """One saved map and where the rule cuts it: ``(cam, keys, plane)``, ``fixed`` when the rule has one."""
    saved = load_map(folder, name)
    cam = saved.cam.astype(np.float32)
    return cam, saved.keys, image_threshold(cam, rule) if fixed is None else fixed


def fp_split_scores(cfg: Config, store: RunStore, pair: tuple[str, str], calibrated: str) -> dict[str, Any] | None:
    """The false positives of two paired maps split by whether they disagree, and what the calibrated
    map keeps of each (:class:`~cpmc_lib.diagnostics.FpSplitMeter`), every map at its own
    ground-truth-free decision (``pseudo.threshold_rule``, as :func:`rule_scores`).

    The FP promise is read here: a discrepancy can only point at the *disagree* group; background
    both maps label object is *shared*, out of the calibration's sight.

    Args:
        pair: the CAM methods whose discrepancy the calibration reads, e.g. ``("refined", "proto")``.
        calibrated: the calibrated map's method, e.g. ``"cpmc"``.

    Returns:
        :meth:`FpSplitMeter.compute` with ``maps`` ({"a", "b", "c": method}); None on data without
        diagnostic masks.
    """
    methods = (*pair, calibrated)
    found = [store.require_maps(cfg, m) for m in methods]
    fixed = [rule_threshold(cfg, metrics) for _, metrics in found]
    key = {"method_hashes": [m.get("method_hash") for _, m in found], "rule": cfg.pseudo.threshold_rule, "value": fixed}
    cache = found[-1][0] / "fp_split.json"  # beside the calibrated maps, as rule_scores.json
    if cache.is_file() and (saved := load_json(cache)).get("key") == key:
        return saved["scores"]
    ds = build_dataset(cfg, cfg.data.cam_split)
    meter, seen = FpSplitMeter(), False
    for name in ds.names:
        gt, diag = ds.targets(name)
        if gt is None or diag is None:
            continue
        cuts = [_cut(folder, name, cfg.pseudo.threshold_rule, thr) for (folder, _), thr in zip(found, fixed, strict=True)]
        meter.update(*(cam_to_mask(cam, keys, thr) for cam, keys, thr in cuts), gt, diag)
        seen = True
    scores = {"maps": dict(zip("abc", methods, strict=True)), **meter.compute()} if seen else None
    save_json(cache, {"key": key, "scores": scores})
    return scores


def stage_crf_labels(cfg: Config, store: RunStore) -> Path | None:
    """The pseudo stage's label folder when it holds ``cfg.pseudo.method``'s labels after the CRF.

    That is: the stage finished for ``cfg`` (its key covers the maps, the rule and the CRF),
    saved the CRF labels (``pseudo.crf``) and labelled every cam-split image (its seg split holds
    them). None otherwise.
    """
    if not cfg.pseudo.crf or not store.is_done("pseudo", store.key(cfg, "pseudo")):
        return None
    folder = labels_dir(store)
    names = build_dataset(cfg, cfg.data.cam_split).names
    return folder if all((folder / f"{n}.png").is_file() for n in names) else None
