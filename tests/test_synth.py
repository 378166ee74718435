"""Tests of the synthetic WSSS benchmark generator (tiny sets, 64 px)."""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from cpmc_lib.config import SynthConfig
from cpmc_lib.datasets import VOCSegmentation
from cpmc_lib.io import IGNORE_INDEX, read_mask_png
from cpmc_lib.synth import (
    ATYPICAL,
    BODY,
    BORDER,
    CONTEXT_ABSENT,
    CONTEXT_PRESENT,
    DISTRACTOR,
    GENERATOR_VERSION,
    NEUTRAL,
    PART,
    DataFolderError,
    add_synth_arguments,
    check_config,
    check_folder,
    class_designs,
    config_from_args,
    ensure_generated,
    generate,
)

TINY = SynthConfig(classes=6, size=64, train=8, val=4, seed=3)
OBJECT_CODES = (BODY, PART, ATYPICAL)
BACKGROUND_CODES = (NEUTRAL, CONTEXT_PRESENT, CONTEXT_ABSENT, DISTRACTOR)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    card = generate(TINY, out, progress=False)
    return out, card


def _names(out, split):
    return (out / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def _all_files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_layout_and_counts(tiny):
    out, card = tiny
    train, val = _names(out, "train"), _names(out, "val")
    assert len(train) == 8 and len(val) == 4 and not set(train) & set(val)
    for name in train + val:
        with Image.open(out / "JPEGImages" / f"{name}.jpg") as img:
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == (64, 64)
        assert (out / "SegmentationClass" / f"{name}.png").is_file()
        assert (out / "Diagnostics" / f"{name}.png").is_file()
    assert len(list((out / "JPEGImages").iterdir())) == 12
    assert not list(out.rglob("*.tmp"))  # atomic writes left no temporaries
    labels = json.loads((out / "cls_labels.json").read_text())
    assert set(labels) == set(train + val)


def test_card(tiny):
    out, card = tiny
    assert json.loads((out / "dataset_card.json").read_text()) == card
    assert card["version"] == GENERATOR_VERSION
    assert card["params"] == dataclasses.asdict(TINY)
    assert card["num_classes"] == 7
    names = card["class_names"]
    assert len(names) == 7 and names[0] == "background" and len(set(names)) == 7
    assert card["calibration"] == {}
    shares = card["pixel_shares"]["all"]
    assert shares["object"] > 0.05 and shares["part"] > 0
    parts = {k: v for k, v in shares.items() if k not in ("object", "part_of_object")}
    assert sum(parts.values()) == pytest.approx(1.0, abs=1e-3)
    assert set(card["diagnostic_codes"]) == {str(c) for c in (*OBJECT_CODES, *BACKGROUND_CODES, BORDER)}


def test_masks_and_labels(tiny):
    out, card = tiny
    labels = json.loads((out / "cls_labels.json").read_text())
    k = card["num_classes"]
    for name, keys in labels.items():
        with Image.open(out / "SegmentationClass" / f"{name}.png") as img:
            assert img.mode == "P"
        mask = read_mask_png(out / "SegmentationClass" / f"{name}.png")
        values = set(np.unique(mask).tolist())
        assert values <= set(range(k)) | {IGNORE_INDEX}
        present = sorted(v for v in values if 0 < v < k)
        assert keys == present and 1 <= len(keys)
        assert IGNORE_INDEX in values  # every object has its border band


def test_diagnostics_agree_with_masks(tiny):
    out, card = tiny
    labels = json.loads((out / "cls_labels.json").read_text())
    seen = set()
    for name, keys in labels.items():
        mask = read_mask_png(out / "SegmentationClass" / f"{name}.png")
        diag = read_mask_png(out / "Diagnostics" / f"{name}.png")
        seen |= set(np.unique(diag).tolist())
        is_object = (mask > 0) & (mask != IGNORE_INDEX)
        assert np.array_equal(np.isin(diag, OBJECT_CODES), is_object)
        assert np.array_equal(np.isin(diag, BACKGROUND_CODES), mask == 0)
        assert np.array_equal(diag == BORDER, mask == IGNORE_INDEX)
        for key in keys:  # every labelled class shows its discriminative part
            assert ((mask == key) & (diag == PART)).sum() > 0
    assert {NEUTRAL, BODY, PART, BORDER} <= seen


def test_part_fraction_follows_part_frac(tmp_path):
    for frac in (0.1, 0.3):
        cfg = SynthConfig(classes=4, size=64, train=12, val=0, part_frac=frac, context_prob=0.0)
        card = generate(cfg, tmp_path / str(frac), progress=False)
        measured = card["pixel_shares"]["all"]["part_of_object"]
        # occlusion and the border band eat body more than part, so the share runs a bit high
        assert frac * 0.8 <= measured <= frac * 1.5, (frac, measured)


def test_context_and_distractors_follow_their_probabilities(tmp_path):
    none = SynthConfig(
        classes=4,
        size=64,
        train=10,
        val=0,
        context_prob=0.0,
        absent_context_prob=0.0,
        distractor_prob=0.0,
        atypical_prob=0.0,
    )
    always = dataclasses.replace(
        none, context_prob=1.0, absent_context_prob=1.0, distractor_prob=1.0, atypical_prob=1.0
    )
    off = generate(none, tmp_path / "off", progress=False)["pixel_shares"]["all"]
    on = generate(always, tmp_path / "on", progress=False)["pixel_shares"]["all"]
    for key in ("context_present", "context_absent", "distractor", "atypical_body"):
        assert off[key] == 0 and on[key] > 0.005, key
    assert on["body"] == 0 and off["body"] > 0


def test_deterministic_by_seed(tiny, tmp_path):
    out, _ = tiny
    again = tmp_path / "again"
    generate(TINY, again, progress=False)
    assert _all_files(again) == _all_files(out)
    other = tmp_path / "other"
    generate(dataclasses.replace(TINY, seed=4), other, progress=False)
    a, b = _all_files(out), _all_files(other)
    assert a["JPEGImages/train_00000.jpg"] != b["JPEGImages/train_00000.jpg"]


def test_images_do_not_depend_on_split_sizes(tiny, tmp_path):
    out, _ = tiny
    fewer = tmp_path / "fewer"
    generate(dataclasses.replace(TINY, train=3, val=1), fewer, progress=False)
    for rel in ("JPEGImages/train_00002.jpg", "SegmentationClass/val_00000.png"):
        assert (fewer / rel).read_bytes() == (out / rel).read_bytes()


def test_ensure_generated_reuses_and_finishes_an_interrupted_generation(tmp_path):
    cfg = SynthConfig(classes=3, size=48, train=4, val=2)
    out = tmp_path / "ds"
    card = ensure_generated(cfg, out, progress=False)
    assert card["complete"] is True
    files = sorted(p for p in out.rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    assert ensure_generated(cfg, out, progress=False) == card
    assert {p: p.stat().st_mtime_ns for p in files} == stamps  # nothing rewritten

    # killed mid-way: the card written first says so, images are missing; the next call finishes
    started = {**card, "complete": False}
    (out / "dataset_card.json").write_text(json.dumps(started))
    (out / "JPEGImages" / "train_00003.jpg").unlink()
    (out / "cls_labels.json").unlink()
    with pytest.raises(ValueError, match="did not finish"):  # the loader does not read it half-made
        VOCSegmentation(out, "train")
    assert ensure_generated(cfg, out, progress=False) == card
    assert _all_files(out) == {p.relative_to(out).as_posix(): b for p, b in _files_of(files).items()}


def _files_of(paths):
    return {p: p.read_bytes() for p in paths}


def test_generation_writes_its_card_first(tmp_path, monkeypatch):
    """A generation killed after the first image leaves a card that marks the folder as the generator's."""
    import cpmc_lib.synth as synth

    cfg = SynthConfig(classes=3, size=48, train=4, val=2)
    real, calls = synth._write_image, []

    def dies_after_one(*args):
        if calls:
            raise KeyboardInterrupt
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(synth, "_write_image", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        generate(cfg, tmp_path / "ds", progress=False, workers=1)
    card = json.loads((tmp_path / "ds" / "dataset_card.json").read_text())
    assert card["complete"] is False and card["params"] == dataclasses.asdict(cfg)
    monkeypatch.undo()
    assert check_folder(cfg, tmp_path / "ds") is None  # ours, unfinished: generating is allowed
    with pytest.raises(DataFolderError, match="unfinished generation"):
        check_folder(dataclasses.replace(cfg, seed=1), tmp_path / "ds")
    assert ensure_generated(cfg, tmp_path / "ds", progress=False)["complete"] is True


# ---------------------------------------------------------------- the user's folders stay untouched


def _snapshot(root):
    """Every path under ``root`` (folders too) with the SHA-256 of each file's bytes."""
    import hashlib

    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def _voc_folder(root):
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(root / "JPEGImages" / "2007_000032.jpg")
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="P").save(root / "SegmentationClass" / "2007_000032.png")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n")  # the user's own split
    return root


def _coco_folder(root):
    (root / "train2014").mkdir(parents=True)
    (root / "val2014").mkdir()
    Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(
        root / "train2014" / "COCO_train2014_000000000009.jpg"
    )
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "train.txt").write_text("COCO_train2014_000000000009\n")
    return root


def _other_settings_folder(root):
    """A synthetic set made by `python -m cpmc_lib synth --seed 5` with fewer images."""
    from cpmc_lib.cli import main

    flags = "--seed 5 --train 3 --val 1 --size 48 --classes 3 --quiet"
    assert main(["synth", "--out", str(root), *flags.split()]) == 0
    return root


def _unknown_folder(root):
    (root / "photos").mkdir(parents=True)
    (root / "notes.txt").write_text("my thesis\n")
    (root / "photos" / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


FOREIGN = {
    "voc": (_voc_folder, "configs/voc.yaml"),
    "coco": (_coco_folder, "configs/coco.yaml"),
    "other-settings": (_other_settings_folder, "--set synth.seed=5"),
    "unknown": (_unknown_folder, "not empty"),
}


@pytest.mark.parametrize("kind", FOREIGN)
def test_a_folder_the_generator_did_not_make_for_this_config_is_left_untouched(kind, tmp_path):
    make, hint = FOREIGN[kind]
    root = make(tmp_path / "data")
    before = _snapshot(root)
    cfg = SynthConfig(classes=3, size=48, train=4, val=2)
    for call in (
        lambda: ensure_generated(cfg, root, progress=False),
        lambda: generate(cfg, root, progress=False),
    ):
        with pytest.raises(DataFolderError, match="Nothing was written") as err:
            call()
        assert str(root) in str(err.value) and hint in str(err.value)
    assert _snapshot(root) == before


def test_other_settings_error_names_both_settings_and_the_fix(tmp_path):
    root = _other_settings_folder(tmp_path / "data")
    cfg = SynthConfig(classes=3, size=48, train=4, val=2, seed=0)
    with pytest.raises(DataFolderError) as err:
        ensure_generated(cfg, root, progress=False)
    assert err.value.differences == {"seed": (5, 0), "train": (3, 4), "val": (1, 2)}
    msg = str(err.value)
    assert (
        "its dataset_card.json vs your config: synth.train 3 vs 4, synth.val 1 vs 2, synth.seed 5 vs 0" in msg
    )
    assert "--set synth.train=3 --set synth.val=1 --set synth.seed=5" in msg  # use the folder as it is
    assert f"--set data.root={root}-train4-val2" in msg  # or generate elsewhere
    # the fix it names works: the folder's own settings reuse it
    same = dataclasses.replace(cfg, seed=5, train=3, val=1)
    assert ensure_generated(same, root, progress=False)["params"]["seed"] == 5


@pytest.mark.parametrize("kind", ["voc", "other-settings"])
def test_cli_pipeline_on_a_foreign_folder_is_an_error_not_a_regeneration(kind, tmp_path, capsys, monkeypatch):
    from cpmc_lib.cli import main


    make, hint = FOREIGN[kind]
    root = make(tmp_path / "data")
    capsys.readouterr()
    before = _snapshot(root)
    args = ["pipeline", "--data", str(root), "--quiet", "--set", f"runs_dir={tmp_path / 'runs'}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and hint in err and "Traceback" not in err
    assert _snapshot(root) == before


def test_generate_into_a_file_is_an_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataFolderError, match="is a file"):
        generate(SynthConfig(train=1, val=0, size=32), tmp_path / "f", progress=False)
    assert (tmp_path / "f").read_text() == "x"


def test_detect_layout(tmp_path):
    from cpmc_lib.datasets import detect_layout

    assert detect_layout(_voc_folder(tmp_path / "VOCdevkit" / "VOC2012")) == "voc"
    assert detect_layout(tmp_path) == "voc"  # a folder holding VOCdevkit/VOC2012
    assert detect_layout(_coco_folder(tmp_path / "coco")) == "coco"
    assert detect_layout(_unknown_folder(tmp_path / "other")) is None


@pytest.mark.parametrize("classes", [1, 21])
def test_class_count_out_of_range(classes, tmp_path):
    with pytest.raises(ValueError, match="classes"):
        generate(SynthConfig(classes=classes, train=1, val=0), tmp_path, progress=False)


def test_class_designs_are_unique():
    designs = class_designs(20)
    assert len({(d.part_colour, d.part_shape) for d in designs}) == 20
    assert len({(d.context_tint, d.context_angle) for d in designs}) == 20
    assert len({d.name for d in designs}) == 20
    groups = {d.group for d in designs}
    assert all(sum(d.group == g for d in designs) >= 2 for g in groups)  # bodies are shared


def test_command_line_flags():
    parser = add_synth_arguments(argparse.ArgumentParser())
    assert config_from_args(parser.parse_args([])) == SynthConfig()
    args = parser.parse_args(
        [
            "--classes",
            "5",
            "--size",
            "96",
            "--part-frac",
            "0.3",
            "--context-prob",
            "0.1",
            "--max-objects",
            "2",
            "--train",
            "7",
            "--val",
            "3",
            "--seed",
            "9",
        ]
    )
    cfg = config_from_args(args)
    assert (cfg.classes, cfg.size, cfg.part_frac, cfg.context_prob, cfg.max_objects) == (5, 96, 0.3, 0.1, 2)
    assert (cfg.train, cfg.val, cfg.seed) == (7, 3, 9)
    with pytest.raises(ValueError, match="part_frac"):
        check_config(dataclasses.replace(cfg, part_frac=0.9))


def test_record_calibration_keeps_the_folder_reusable(tmp_path):
    from cpmc_lib.io import load_json
    from cpmc_lib.synth import ensure_generated, record_calibration

    cfg = SynthConfig(train=4, val=2, size=64)
    ensure_generated(cfg, tmp_path, progress=False)
    mtime = (tmp_path / "JPEGImages" / "train_00000.jpg").stat().st_mtime_ns
    record_calibration(tmp_path, {"cam_miou": 42.0})
    assert load_json(tmp_path / "dataset_card.json")["calibration"] == {"cam_miou": 42.0}
    ensure_generated(cfg, tmp_path, progress=False)  # still the same data: not regenerated
    assert (tmp_path / "JPEGImages" / "train_00000.jpg").stat().st_mtime_ns == mtime
    with pytest.raises(FileNotFoundError, match="generate the data first"):
        record_calibration(tmp_path / "nothing", {})
