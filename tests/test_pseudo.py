"""Tests of cpmc_lib.pseudo: the stage's PNGs and scores, computed again here image by image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cpmc_lib import label_variants, labels, pseudo
from cpmc_lib.datasets import build_dataset
from cpmc_lib.diagnostics import LabelPathologyMeter
from cpmc_lib.io import read_mask_png
from cpmc_lib.mapfile import load_map, save_map
from cpmc_lib.metrics import miou


def _direct_scores(cfg, store, crf: bool):
    """Pseudo labels and mIoU computed here, image by image, from the saved maps."""
    ds = build_dataset(cfg, cfg.data.cam_split)
    found, preds, gts = {}, [], []
    fg, bg = labels.label_planes(0.25, cfg.pseudo)
    for i, name in enumerate(ds.names):
        saved = load_map(store.maps_dir("cam"), name)
        cam, keys = saved.cam.astype(np.float32), saved.keys
        if crf:
            img = np.asarray(Image.open(ds.image_path(name)).convert("RGB"))
            lab = labels.crf_pseudo_label(img, cam, keys, cfg.crf, fg, bg)
        else:
            lab = labels.pseudo_label(cam, keys, fg, bg)
        if cfg.pseudo.assign == "parts":  # method "cam": its own maps locate the parts
            lab = labels.assign_to_parts(lab, cam, keys, cam, 0.25, cfg.pseudo.part_share, cfg.pseudo.contest_share)
        found[name] = lab
        gt = ds[i]["mask"].numpy()
        keep = lab != 255
        preds.append(np.where(keep, lab, 0))
        gts.append(np.where(keep, gt, 255))
    return found, miou(preds, gts, cfg.data.num_classes)["miou"]


@pytest.mark.parametrize("save_crf", [True, False])
def test_stage_png_round_trip_and_miou(tiny_cam_run, save_crf):
    cfg, store = tiny_cam_run
    over = {
        "pseudo.crf": save_crf,
        "pseudo.band": (0.4, 1.6),  # around the oracle's 0.25: planes 0.4 and 0.1
        "pseudo.threshold_rule": "oracle",
        "pseudo.method": "cam",
    }
    cfg = cfg.replace(**over)
    result = pseudo.run(cfg, store, progress=False)
    assert result["method"] == "cam" and result["threshold"] == 0.25 and result["planes"] == pytest.approx([0.4, 0.1])
    assert result["threshold_rule"] == "oracle"
    assert result["images"] == 8 and 0 < result["ignore_frac"] < 0.5
    plain, miou_plain = _direct_scores(cfg, store, crf=False)
    with_crf, miou_crf = _direct_scores(cfg, store, crf=True)
    assert result["miou"] == pytest.approx(miou_plain)
    assert result["miou_crf"] == pytest.approx(miou_crf)
    saved = with_crf if save_crf else plain
    for name, lab in saved.items():
        np.testing.assert_array_equal(read_mask_png(pseudo.labels_dir(store) / f"{name}.png"), lab)
    # which kinds of pixel the labels get right, from the benchmark's diagnostic masks (ignore = neither)
    ds = build_dataset(cfg, cfg.data.cam_split)
    for suffix, made in (("", plain), ("_crf", with_crf)):
        meter = LabelPathologyMeter()
        for i, name in enumerate(ds.names):
            meter.update(made[name], ds[i]["mask"], ds[i]["diag"])
        assert result[f"pathology{suffix}"] == pytest.approx(meter.compute(), nan_ok=True)
    # A finished stage is reused.
    assert pseudo.run(cfg, store, progress=False) == result


def test_crf_helps_blurred_cams(tiny_cam_run):
    cfg, store = tiny_cam_run
    cfg = cfg.replace(**{"pseudo.band": (1.0, 1.0), "pseudo.method": "cam"})  # no zone: the CRF decides every pixel
    result = pseudo.run(cfg, store, progress=False)
    assert result["ignore_frac"] == 0 and result["crf"] is True
    assert result["miou_crf"] > result["miou"]


def test_stage_band_ignores_the_uncertain_zone_per_image(tiny_cam_run):
    cfg, store = tiny_cam_run
    band = (0.5, 1.5)
    cfg = cfg.replace(**{"pseudo.threshold_rule": "otsu", "pseudo.crf": False, "pseudo.band": band, "pseudo.method": "cam"})
    result = pseudo.run(cfg, store, progress=False)
    ds = build_dataset(cfg, cfg.data.cam_split)
    ignored = 0
    for name in ds.names:  # each image's planes sit around its own Otsu threshold
        cam = load_map(store.maps_dir("cam"), name).cam.astype(np.float32)
        thr = labels.image_threshold(cam, "otsu")
        lab = read_mask_png(pseudo.labels_dir(store) / f"{name}.png")
        top = cam.max(0)
        assert (lab[top > min(1.5 * thr, 0.9)] != 255).all() and (lab[top <= 0.5 * thr] == 0).all()
        assert (lab[(top > 0.5 * thr) & (top <= thr)] == 255).all()
        ignored += int((lab == 255).sum())
    assert ignored > 0 and result["ignore_frac"] == pytest.approx(ignored / (len(ds.names) * lab.size))
    assert labels.label_planes(0.3, cfg.pseudo) == pytest.approx((0.45, 0.15))
    irn = cfg.replace(**label_variants.IRN_PLANES).pseudo  # IRN's 0.30 / 0.05 as a band around 0.3
    assert labels.label_planes(0.3, irn) == pytest.approx((0.3, 0.05))


@pytest.mark.parametrize("rule", ["otsu", "fixed"])
def test_stage_with_gt_free_rule(tiny_cam_run, rule):
    cfg, store = tiny_cam_run
    cfg = cfg.replace(**{"pseudo.threshold_rule": rule, "pseudo.bg_threshold": 0.3, "pseudo.crf": False,
                         "pseudo.band": (1.0, 1.0), "pseudo.assign": "argmax", "pseudo.method": "cam"})  # fmt: skip
    result = pseudo.run(cfg, store, progress=False)
    assert result["threshold_rule"] == rule
    assert result["threshold"] == (None if rule == "otsu" else 0.3)
    ds = build_dataset(cfg, cfg.data.cam_split)
    preds, gts, planes = [], [], []
    for i, name in enumerate(ds.names):  # the same labels computed here, image by image
        saved = load_map(store.maps_dir("cam"), name)
        cam = saved.cam.astype(np.float32)
        thr = labels.image_threshold(cam, rule, 0.3)
        planes.append(thr)
        lab = labels.pseudo_label(cam, saved.keys, thr)
        np.testing.assert_array_equal(read_mask_png(pseudo.labels_dir(store) / f"{name}.png"), lab)
        preds.append(lab)
        gts.append(ds[i]["mask"].numpy())
    assert result["miou"] == pytest.approx(miou(preds, gts, cfg.data.num_classes)["miou"])
    assert result["threshold_mean"] == pytest.approx(np.mean(planes))
    if rule == "otsu":
        assert len(set(planes)) > 1  # it adapts per image
    scores = pseudo.rule_scores(cfg, store, "cam")  # the CAM scored at the same decision
    assert scores["rule"] == rule and scores["miou"] == pytest.approx(result["miou"])
    assert pseudo.rule_scores(cfg, store, "cam") == scores  # cached beside the maps


def test_seg_split_labels_every_image_and_scores_the_cam_split_only(tiny_cam_run):
    """Labels for all 12 images of a train + val seg split; the score covers train's 8, as on train alone."""
    from conftest import blurred_cams

    from cpmc_lib.store import StageMissingError

    cfg, store = tiny_cam_run
    train, val = (build_dataset(cfg, s) for s in ("train", "val"))
    sets = cfg.data_root() / "ImageSets" / "Segmentation"
    (sets / "train_val.txt").write_text("".join(f"{n}\n" for n in train.names + val.names))
    seg = cfg.replace(**{"data.seg_split": "train_val", "pseudo.method": "cam"})
    with pytest.raises(StageMissingError, match="maps of the seg split 'train_val'"):
        pseudo.run(seg, store, progress=False)  # the val images have no maps yet
    folder = store.maps_dir("cam")
    for i, name in enumerate(val.names):  # as cams.run(..., seg_split=True) would add them
        sample = val[i]
        keys = [int(k) + 1 for k in np.flatnonzero(sample["label"].numpy())]
        save_map(folder, name, np.array(keys), blurred_cams(sample["mask"].numpy(), keys))
    both = pseudo.make_labels(seg, folder, 0.25, progress=False, split="train_val")
    alone = pseudo.make_labels(cfg, folder, 0.25, progress=False)
    assert (both["split"], both["images"], both["scored_on"], both["scored_images"]) == (
        "train_val",
        12,
        "train",
        8,
    )
    assert (alone["split"], alone["images"], alone["scored_images"]) == ("train", 8, 8)
    for k in ("miou", "miou_crf", "precision", "recall"):
        assert both[k] == alone[k], k


def test_compare_reads_the_stage_crf_labels_instead_of_running_the_crf_again(tiny_cam_run, monkeypatch):
    cfg, store = tiny_cam_run
    cfg = cfg.replace(**{"pseudo.method": "cam", "pseudo.threshold_rule": "otsu"})
    assert pseudo.stage_crf_labels(cfg, store) is None  # no stage yet: compare runs the CRF
    fresh = label_variants.compare(cfg, store, ("cam",), limit=6, progress=False)["cam"]
    pseudo.run(cfg, store, progress=False)
    assert pseudo.stage_crf_labels(cfg, store) == pseudo.labels_dir(store)

    def no_crf(*args, **kwargs):
        raise AssertionError("the CRF ran again")

    monkeypatch.setattr(pseudo, "crf_map", no_crf)
    assert label_variants.compare(cfg, store, ("cam",), limit=6, progress=False)["cam"] == fresh
    # other settings (here the oracle rule) are not the stage's labels: the CRF runs
    oracle = cfg.replace(**{"pseudo.threshold_rule": "oracle"})
    assert pseudo.stage_crf_labels(oracle, store) is None
    with pytest.raises(AssertionError, match="the CRF ran again"):
        label_variants.compare(oracle, store, ("cam",), limit=6, progress=False)


def test_compare_zones_reuses_the_default_and_leaves_out_an_absent_band(tiny_cam_run):
    cfg, store = tiny_cam_run
    cfg = cfg.replace(**{"pseudo.method": "cam", "pseudo.crf": True})
    default = label_variants.compare(cfg, store, ("cam",), progress=False)["cam"]
    zones = label_variants.compare_zones(cfg, store, default, progress=False)
    assert list(zones) == ["no zone", f"band {list(cfg.pseudo.band)}", "IRN 0.30 / 0.05 (fixed)"]
    assert zones[f"band {list(cfg.pseudo.band)}"] is default
    assert zones["no zone"]["ignore_frac"] == 0 and zones["IRN 0.30 / 0.05 (fixed)"]["ignore_frac"] > 0
    off = cfg.replace(**{"pseudo.band": (1.0, 1.0)})
    assert list(label_variants.compare_zones(off, store, default, progress=False)) == ["no zone", "IRN 0.30 / 0.05 (fixed)"]


def test_stage_assign_parts_changes_only_contested_object_pixels(tiny_cam_run):
    cfg, store = tiny_cam_run
    over = {"pseudo.crf": False, "pseudo.band": (1.0, 1.0), "pseudo.method": "cam"}
    argmax = pseudo.run(cfg.replace(**over, **{"pseudo.assign": "argmax"}), store, progress=False)
    before = {n: read_mask_png(pseudo.labels_dir(store) / f"{n}.png") for n in build_dataset(cfg, cfg.data.cam_split).names}
    parts = pseudo.run(cfg.replace(**over, **{"pseudo.assign": "parts"}), store, progress=False)
    assert argmax["assign"] == "argmax" and parts["assign"] == "parts"
    changed = 0
    for name, lab in before.items():
        new = read_mask_png(pseudo.labels_dir(store) / f"{name}.png")
        diff = new != lab
        assert ((lab[diff] > 0) & (lab[diff] != 255) & (new[diff] > 0)).all()  # object stays object
        changed += int(diff.sum())
    assert changed > 0  # the tiny benchmark has images with two classes of one group
    with pytest.raises(ValueError, match="part_share"):
        pseudo.run(cfg.replace(**{"pseudo.part_share": 0.0, "pseudo.method": "cam"}), store, progress=False)


def test_the_labels_are_also_scored_with_their_ignored_pixels_as_background(tiny_cam_run):
    """miou_bg: every pixel scored, the ignored ones as background; equal to miou without an ignore zone."""
    cfg, store = tiny_cam_run
    cfg = cfg.replace(**{"pseudo.method": "cam", "pseudo.crf": False, "pseudo.band": (0.5, 1.5)})
    zone = pseudo.run(cfg, store, progress=False)
    ds = build_dataset(cfg, cfg.data.cam_split)
    preds, gts = [], []
    for i, name in enumerate(ds.names):
        lab = read_mask_png(pseudo.labels_dir(store) / f"{name}.png")
        preds.append(np.where(lab == 255, 0, lab))
        gts.append(ds[i]["mask"].numpy())
    assert zone["ignore_frac"] > 0 and zone["miou_bg"] == pytest.approx(miou(preds, gts, cfg.data.num_classes)["miou"])
    assert zone["miou_bg"] != zone["miou"]
    plain = pseudo.make_labels(cfg.replace(**{"pseudo.band": (1.0, 1.0)}), store.maps_dir("cam"), None, progress=False)
    assert plain["ignore_frac"] == 0 and plain["miou_bg"] == plain["miou"]
