"""Tests of cpmc_lib.pseudo: IRN's label rule, the ignore zone, the stage's PNGs and scores."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cpmc_lib import pseudo
from cpmc_lib.datasets import build_dataset
from cpmc_lib.diagnostics import LabelPathologyMeter
from cpmc_lib.io import read_mask_png
from cpmc_lib.metrics import cam_to_mask, miou


def test_ignore_zone_hand_case():
    # Two classes (3, 7) on a row of five pixels.
    cam = np.array(
        [
            [[0.90, 0.20, 0.02, 0.00, 0.40]],  # class 3
            [[0.10, 0.10, 0.03, 0.60, 0.50]],  # class 7
        ]
    )
    keys = [3, 7]
    # fg where the top map > 0.30, bg where it is <= 0.05, ignore in between.
    assert pseudo.pseudo_label(cam, keys, 0.15, conf_fg=0.30, conf_bg=0.05).tolist() == [[3, 255, 0, 7, 7]]
    # Without confident thresholds: one plane, no ignore.
    assert pseudo.pseudo_label(cam, keys, 0.15).tolist() == [[3, 3, 0, 7, 7]]
    # conf_bg alone: ignore between conf_bg and bg_threshold.
    assert pseudo.pseudo_label(cam, keys, 0.25, conf_bg=0.15).tolist() == [[3, 255, 0, 7, 7]]


def test_combine_confident_follows_irn():
    fg = np.array([[2, 0, 0, 5]])
    bg = np.array([[2, 4, 0, 0]])  # the last pixel: only a CRF can make bg say background here
    assert pseudo.combine_confident(fg, bg).tolist() == [[2, 255, 0, 5]]


def test_planes_must_be_ordered():
    assert pseudo.score_planes(0.2) == (0.2, 0.2)
    assert pseudo.score_planes(0.2, 0.3, 0.05) == (0.3, 0.05)
    with pytest.raises(ValueError, match="conf_bg"):
        pseudo.score_planes(0.2, conf_bg=0.4)


def test_cam_probs_argmax_is_the_threshold_rule():
    rng = np.random.default_rng(0)
    cam = rng.random((3, 9, 11)).astype(np.float32)
    keys = np.array([1, 4, 6])
    probs = pseudo.cam_probs(cam, 0.45)
    assert probs.shape == (4, 9, 11)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-6)
    ids = np.concatenate([[0], keys])
    np.testing.assert_array_equal(ids[probs.argmax(0)], cam_to_mask(cam, keys, 0.45).numpy())


def _direct_scores(cfg, store, crf: bool):
    """Pseudo labels and mIoU computed here, image by image, from the saved maps."""
    ds = build_dataset(cfg, cfg.data.cam_split)
    labels, preds, gts = {}, [], []
    for i, name in enumerate(ds.names):
        saved = np.load(store.path("cams") / "cam" / f"{name}.npy", allow_pickle=True).item()
        cam, keys = saved["cam"].astype(np.float32), saved["keys"]
        if crf:
            img = np.asarray(Image.open(ds.image_path(name)).convert("RGB"))
            lab = pseudo.crf_pseudo_label(
                img, cam, keys, cfg.crf, 0.25, cfg.pseudo.conf_fg, cfg.pseudo.conf_bg
            )
        else:
            lab = pseudo.pseudo_label(cam, keys, 0.25, cfg.pseudo.conf_fg, cfg.pseudo.conf_bg)
        if cfg.pseudo.assign == "parts":  # method "cam": its own maps locate the parts
            lab = pseudo.assign_to_parts(lab, cam, keys, cam, 0.25, cfg.pseudo.part_share, cfg.pseudo.contest_share)
        labels[name] = lab
        gt = ds[i]["mask"].numpy()
        keep = lab != 255
        preds.append(np.where(keep, lab, 0))
        gts.append(np.where(keep, gt, 255))
    return labels, miou(preds, gts, cfg.data.num_classes)["miou"]


@pytest.mark.parametrize("save_crf", [True, False])
def test_stage_png_round_trip_and_miou(tiny_cam_run, save_crf):
    cfg, store = tiny_cam_run
    over = {
        "pseudo.crf": save_crf,
        "pseudo.conf_fg": 0.4,
        "pseudo.conf_bg": 0.1,
        "pseudo.threshold_rule": "oracle",
    }
    cfg = cfg.replace(**over)
    result = pseudo.run(cfg, store, method="cam", progress=False)
    assert result["method"] == "cam" and result["threshold"] == 0.25 and result["planes"] == [0.4, 0.1]
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
    for suffix, labels in (("", plain), ("_crf", with_crf)):
        meter = LabelPathologyMeter()
        for i, name in enumerate(ds.names):
            meter.update(labels[name], ds[i]["mask"], ds[i]["diag"])
        assert result[f"pathology{suffix}"] == pytest.approx(meter.compute(), nan_ok=True)
    # A finished stage is reused.
    assert pseudo.run(cfg, store, method="cam", progress=False) == result


def test_crf_helps_blurred_cams(tiny_cam_run):
    cfg, store = tiny_cam_run
    cfg = cfg.replace(**{"pseudo.band": (1.0, 1.0)})  # no ignore zone: the CRF decides every pixel
    result = pseudo.run(cfg, store, method="cam", progress=False)
    assert result["ignore_frac"] == 0 and result["crf"] is True
    assert result["miou_crf"] > result["miou"]


def test_otsu_threshold_by_hand():
    # Two tight groups: the cut lies between them, at a bin edge above the lower group.
    low, high = np.full(30, 0.1), np.full(10, 0.8)
    t = pseudo.otsu_threshold(np.concatenate([low, high]))
    assert 0.1 < t <= 0.8
    assert pseudo.otsu_threshold(np.full(7, 0.4)) == 1.0  # nothing to split: all background
    assert pseudo.otsu_threshold(np.array([])) == 1.0


def test_image_threshold_adapts_per_image():
    # The same object on a weak and on a strong background: a fixed plane fits one of them,
    # Otsu's cut follows each image's own values.
    weak = np.array([[[0.05, 0.1, 0.9, 0.95]]], np.float32)
    strong = np.array([[[0.5, 0.55, 0.9, 0.95]]], np.float32)
    assert pseudo.image_threshold(weak, "fixed", 0.3) == 0.3 == pseudo.image_threshold(strong, "fixed", 0.3)
    for cam in (weak, strong):
        thr = pseudo.image_threshold(cam, "otsu")
        assert pseudo.pseudo_label(cam, [2], thr).tolist() == [[0, 0, 2, 2]]
    assert pseudo.pseudo_label(strong, [2], 0.3).tolist() == [[2, 2, 2, 2]]  # the fixed plane fails here
    assert pseudo.image_threshold(np.zeros((0, 1, 4), np.float32), "otsu") == 1.0  # no class: background
    with pytest.raises(ValueError, match="per-image"):
        pseudo.image_threshold(weak, "oracle")


def test_rule_threshold_reads_no_ground_truth_unless_oracle(tiny_cam_run):
    cfg, _ = tiny_cam_run
    assert pseudo.rule_threshold(cfg.replace(**{"pseudo.threshold_rule": "otsu"})) is None
    fixed = cfg.replace(**{"pseudo.threshold_rule": "fixed", "pseudo.bg_threshold": 0.35})
    assert pseudo.rule_threshold(fixed, {"threshold": 0.9}) == 0.35  # the metrics are not read
    assert (
        pseudo.rule_threshold(cfg.replace(**{"pseudo.threshold_rule": "oracle"}), {"threshold": 0.9}) == 0.9
    )
    with pytest.raises(ValueError, match="pseudo.bg_threshold"):
        pseudo.rule_threshold(fixed.replace(**{"pseudo.bg_threshold": 0.0}))
    with pytest.raises(ValueError, match="pseudo.conf_fg"):
        pseudo.rule_threshold(cfg.replace(**{"pseudo.threshold_rule": "otsu", "pseudo.conf_fg": 0.3}))


def test_band_planes_follow_the_image_threshold():
    assert pseudo.band_planes(0.4, (1.0, 1.0)) == (0.4, 0.4)
    fg, bg = pseudo.band_planes(0.2, (0.5, 2.0))
    assert (fg, bg) == pytest.approx((0.4, 0.1))
    assert pseudo.band_planes(0.8, (0.5, 2.0))[0] == pytest.approx(0.9)  # below every map's peak
    assert pseudo.band_planes(0.95, (0.5, 2.0))[0] == pytest.approx(0.95)  # never below the plane
    for bad in [(0.0, 1.5), (1.2, 1.5), (0.5, 0.8)]:
        with pytest.raises(ValueError, match="pseudo.band"):
            pseudo.band_planes(0.4, bad)


def test_stage_band_ignores_the_uncertain_zone_per_image(tiny_cam_run):
    cfg, store = tiny_cam_run
    band = (0.5, 1.5)
    cfg = cfg.replace(**{"pseudo.threshold_rule": "otsu", "pseudo.crf": False, "pseudo.band": band})
    result = pseudo.run(cfg, store, method="cam", progress=False)
    ds = build_dataset(cfg, cfg.data.cam_split)
    ignored = 0
    for name in ds.names:  # each image's planes sit around its own Otsu threshold
        saved = np.load(store.path("cams") / "cam" / f"{name}.npy", allow_pickle=True).item()
        cam = saved["cam"].astype(np.float32)
        thr = pseudo.image_threshold(cam, "otsu")
        lab = read_mask_png(pseudo.labels_dir(store) / f"{name}.png")
        top = cam.max(0)
        assert (lab[top > min(1.5 * thr, 0.9)] != 255).all() and (lab[top <= 0.5 * thr] == 0).all()
        assert (lab[(top > 0.5 * thr) & (top <= thr)] == 255).all()
        ignored += int((lab == 255).sum())
    assert ignored > 0 and result["ignore_frac"] == pytest.approx(ignored / (len(ds.names) * lab.size))
    irn = cfg.replace(**{"pseudo.threshold_rule": "fixed", "pseudo.conf_fg": 0.5, "pseudo.conf_bg": 0.05}).pseudo
    assert pseudo.label_planes(0.3, irn) == (0.5, 0.05)  # IRN's absolute planes replace the band
    assert pseudo.label_planes(0.3, cfg.pseudo) == pytest.approx((0.45, 0.15))


def test_band_leaves_the_cache_keys_of_before_it_existed(tiny_cam_run, monkeypatch):
    from cpmc_lib.config import Config
    from cpmc_lib.store import stage_hash

    cfg, _ = tiny_cam_run
    cfg = cfg.replace(**{"pseudo.band": (1.0, 1.0)})  # no zone
    stages = ("pseudo", "segmentation")
    key = {s: stage_hash(cfg, s) for s in stages}
    assert all(stage_hash(cfg.replace(**{"pseudo.band": (0.5, 1.5)}), s) != key[s] for s in stages)
    real = Config.to_dict

    def without_band(self):  # the config as it was before pseudo.band existed
        d = real(self)
        d["pseudo"].pop("band")
        return d

    monkeypatch.setattr(Config, "to_dict", without_band)
    assert {s: stage_hash(cfg, s) for s in stages} == key


@pytest.mark.parametrize("rule", ["otsu", "fixed"])
def test_stage_with_gt_free_rule(tiny_cam_run, rule):
    cfg, store = tiny_cam_run
    cfg = cfg.replace(**{"pseudo.threshold_rule": rule, "pseudo.bg_threshold": 0.3, "pseudo.crf": False,
                         "pseudo.band": (1.0, 1.0), "pseudo.assign": "argmax"})  # fmt: skip
    result = pseudo.run(cfg, store, method="cam", progress=False)
    assert result["threshold_rule"] == rule
    assert result["threshold"] == (None if rule == "otsu" else 0.3)
    ds = build_dataset(cfg, cfg.data.cam_split)
    preds, gts, planes = [], [], []
    for i, name in enumerate(ds.names):  # the same labels computed here, image by image
        saved = np.load(store.path("cams") / "cam" / f"{name}.npy", allow_pickle=True).item()
        cam = saved["cam"].astype(np.float32)
        thr = pseudo.image_threshold(cam, rule, 0.3)
        planes.append(thr)
        lab = pseudo.pseudo_label(cam, saved["keys"], thr)
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
    folder = store.path("cams") / "cam"
    for i, name in enumerate(val.names):  # as cams.map_seg_split would add them
        sample = val[i]
        keys = [int(k) + 1 for k in np.flatnonzero(sample["label"].numpy())]
        cam = blurred_cams(sample["mask"].numpy(), keys)
        np.save(folder / f"{name}.npy", {"keys": np.array(keys), "cam": cam}, allow_pickle=True)
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
    fresh = pseudo.compare(cfg, store, ("cam",), limit=6, progress=False)["cam"]
    pseudo.run(cfg, store, progress=False)
    assert pseudo.stage_crf_labels(cfg, store) == pseudo.labels_dir(store)

    def no_crf(*args, **kwargs):
        raise AssertionError("the CRF ran again")

    monkeypatch.setattr(pseudo, "crf_map", no_crf)
    assert pseudo.compare(cfg, store, ("cam",), limit=6, progress=False)["cam"] == fresh
    # other settings (here the oracle rule) are not the stage's labels: the CRF runs
    oracle = cfg.replace(**{"pseudo.threshold_rule": "oracle"})
    assert pseudo.stage_crf_labels(oracle, store) is None
    with pytest.raises(AssertionError, match="the CRF ran again"):
        pseudo.compare(oracle, store, ("cam",), limit=6, progress=False)


def test_describe_threshold_says_the_rule_and_never_hides_the_oracle():
    from cpmc_lib.pseudo import describe_threshold

    per_image = describe_threshold(
        {"threshold_rule": "otsu", "threshold": None, "threshold_mean": 0.3941, "images": 20}
    )
    assert (
        per_image.startswith("background threshold per image, rule otsu")
        and "mean threshold 0.394 over the 20" in per_image
    )
    assert "oracle view" in describe_threshold({"threshold_rule": "oracle", "threshold": 0.25})
    assert "0.250" in describe_threshold({"threshold_rule": "oracle", "threshold": 0.25})


def test_compare_zones_reuses_the_default_and_leaves_out_an_absent_band(tiny_cam_run):
    cfg, store = tiny_cam_run
    cfg = cfg.replace(**{"pseudo.method": "cam", "pseudo.crf": True})
    default = pseudo.compare(cfg, store, ("cam",), progress=False)["cam"]
    zones = pseudo.compare_zones(cfg, store, default, progress=False)
    assert list(zones) == ["no zone", f"band {list(cfg.pseudo.band)}", "IRN 0.30 / 0.05 (fixed)"]
    assert zones[f"band {list(cfg.pseudo.band)}"] is default
    assert zones["no zone"]["ignore_frac"] == 0 and zones["IRN 0.30 / 0.05 (fixed)"]["ignore_frac"] > 0
    off = cfg.replace(**{"pseudo.band": (1.0, 1.0)})
    assert list(pseudo.compare_zones(off, store, default, progress=False)) == ["no zone", "IRN 0.30 / 0.05 (fixed)"]


def test_assign_to_parts_gives_a_shared_body_to_the_nearest_part():
    # Two objects of one group side by side: both classes' maps cover both bodies (columns 0-7),
    # the arg-max gave everything to class 2; each class's classifier CAM peaks on its own part.
    cam = np.zeros((2, 3, 10), np.float32)
    cam[0, :, :8], cam[1, :, :8] = 0.7, 0.9
    part_cam = np.zeros_like(cam)
    part_cam[0, 1, 1], part_cam[1, 1, 6] = 1.0, 1.0
    part_cam[0, 1, 2] = 0.5  # below part_share of the peak: not part of the part
    label = np.full((3, 10), 2, np.uint8)
    label[:, 8:] = 0
    label[0, 3] = 255
    out = pseudo.assign_to_parts(label, cam, [1, 2], part_cam, 0.4, part_share=0.7, contest_share=0.5)
    nearest_1 = np.zeros((3, 10), bool)
    nearest_1[:, :4] = True  # columns 0-3 lie nearer column 1 than column 6
    assert (out[nearest_1 & (label == 2)] == 1).all() and (out[~nearest_1 & (label == 2)] == 2).all()
    assert out[0, 3] == 255 and (out[:, 8:] == 0).all()  # ignore and background untouched
    # a pixel only one class's map reaches is not contested: its label stays
    cam[0, 0, 0] = 0.1
    assert pseudo.assign_to_parts(label, cam, [1, 2], part_cam, 0.4)[0, 0] == 2
    # one class, or no class whose part exists: nothing to decide
    assert (pseudo.assign_to_parts(label, cam[:1], [2], part_cam[:1], 0.4) == label).all()
    assert (pseudo.assign_to_parts(label, cam, [1, 2], np.zeros_like(cam), 0.4) == label).all()
    with pytest.raises(ValueError, match="do not match"):
        pseudo.assign_to_parts(label, cam, [1, 2], part_cam[:, :2], 0.4)


def test_assign_argmax_leaves_the_cache_keys_of_before_it_existed(tiny_cam_run, monkeypatch):
    from cpmc_lib.config import Config
    from cpmc_lib.store import stage_hash

    cfg, _ = tiny_cam_run
    cfg = cfg.replace(**{"pseudo.assign": "argmax"})
    stages = ("pseudo", "segmentation")
    key = {s: stage_hash(cfg, s) for s in stages}
    assert all(stage_hash(cfg.replace(**{"pseudo.assign": "parts"}), s) != key[s] for s in stages)
    assert stage_hash(cfg.replace(**{"pseudo.part_share": 0.5}), "pseudo") == key["pseudo"]  # unread
    real = Config.to_dict

    def without_assign(self):  # the config as it was before pseudo.assign existed
        d = real(self)
        for k in ("assign", "part_share", "contest_share"):
            d["pseudo"].pop(k)
        return d

    monkeypatch.setattr(Config, "to_dict", without_assign)
    assert {s: stage_hash(cfg, s) for s in stages} == key


def test_stage_assign_parts_changes_only_contested_object_pixels(tiny_cam_run):
    cfg, store = tiny_cam_run
    over = {"pseudo.crf": False, "pseudo.band": (1.0, 1.0)}
    argmax = pseudo.run(cfg.replace(**over, **{"pseudo.assign": "argmax"}), store, method="cam", progress=False)
    before = {n: read_mask_png(pseudo.labels_dir(store) / f"{n}.png") for n in build_dataset(cfg, cfg.data.cam_split).names}
    parts = pseudo.run(cfg.replace(**over, **{"pseudo.assign": "parts"}), store, method="cam", progress=False)
    assert argmax["assign"] == "argmax" and parts["assign"] == "parts"
    changed = 0
    for name, lab in before.items():
        new = read_mask_png(pseudo.labels_dir(store) / f"{name}.png")
        diff = new != lab
        assert ((lab[diff] > 0) & (lab[diff] != 255) & (new[diff] > 0)).all()  # object stays object
        changed += int(diff.sum())
    assert changed > 0  # the tiny benchmark has images with two classes of one group
    with pytest.raises(ValueError, match="part_share"):
        pseudo.run(cfg.replace(**{"pseudo.part_share": 0.0}), store, method="cam", progress=False)
