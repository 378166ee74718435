"""Tests for cpmc_lib.datasets on the tiny fake VOC, synthetic and COCO folders of conftest.py."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from cpmc_lib.config import Config, ConfigError, DataConfig
from cpmc_lib.datasets import (
    COCO_CATEGORY_IDS,
    COCO_CLASSES,
    VOC_CLASSES,
    COCOSegmentation,
    DatasetError,
    VOCSegmentation,
    build_dataset,
    coco_category_to_index,
    collate,
)
from cpmc_lib.io import save_mask_png
from cpmc_lib.transforms import train_transform


def _cfg(kind: str, root, num_classes: int, **data) -> Config:
    return Config().replace(
        **{"data.kind": kind, "data.root": str(root), "data.num_classes": num_classes},
        **{f"data.{k}": v for k, v in data.items()},
    )


def _fg(label: torch.Tensor) -> list[int]:
    """Class ids (1..K-1) set in a multi-hot label."""
    return (torch.nonzero(label).flatten() + 1).tolist()


# --- VOC -----------------------------------------------------------------------------------------


def test_voc_sample_format(fake_voc_root):
    ds = VOCSegmentation(fake_voc_root, "train")
    assert len(ds) == 2 and ds.names == ["2007_000001", "2007_000002"]
    assert ds.class_names == VOC_CLASSES and ds.num_classes == 21 and ds.split == "train"
    s = ds[1]
    assert s["name"] == "2007_000002"
    assert isinstance(s["img"], tv_tensors.Image) and s["img"].dtype == torch.uint8
    assert s["img"].shape == (3, 24, 32)
    assert isinstance(s["mask"], tv_tensors.Mask) and s["mask"].dtype == torch.int64
    assert s["mask"].shape == (24, 32)
    assert set(s["mask"].unique().tolist()) == {0, 12, 15, 255}
    assert s["label"].dtype == torch.float32 and s["label"].shape == (20,)
    assert _fg(s["label"]) == [12, 15]
    assert "diag" not in s


def test_require_masks_names_the_missing_file(fake_voc_root):
    """train_aug's 2008_000004 has only an XML: requiring masks names where its mask was looked for."""
    VOCSegmentation(fake_voc_root, "train").require_masks("why")  # every train image has a mask
    ds = VOCSegmentation(fake_voc_root, "train_aug")
    aug = fake_voc_root / "SegmentationClassAug" / "2008_000004.png"
    official = fake_voc_root / "SegmentationClass" / "2008_000004.png"
    with pytest.raises(DatasetError) as e:
        ds.require_masks("the ceiling trains on them")
    msg = str(e.value)
    assert msg.startswith(f"{aug} does not exist (nor {official})")
    assert "'train_aug' (1 of 5 images lack one); the ceiling trains on them" in msg


def test_voc_root_may_be_the_devkit_parent(fake_voc_root):
    ds = VOCSegmentation(fake_voc_root.parent.parent, "train")
    assert ds.root == fake_voc_root and len(ds) == 2


def test_voc_train_aug_masks_and_xml_labels(fake_voc_root):
    ds = VOCSegmentation(fake_voc_root, "train_aug")
    by_name = {n: ds[i] for i, n in enumerate(ds.names)}
    assert len(ds) == 5
    # SegmentationClassAug when SegmentationClass lacks the mask
    assert _fg(by_name["2008_000003"]["label"]) == [7]
    assert 7 in by_name["2008_000003"]["mask"].unique()
    # auto mask dir prefers SegmentationClass
    assert _fg(by_name["2007_000005"]["label"]) == [1]
    # no mask: labels from Annotations XML, mask all ignore
    s = by_name["2008_000004"]
    assert _fg(s["label"]) == [VOC_CLASSES.index("cat"), VOC_CLASSES.index("dog")]
    assert (s["mask"] == 255).all()


def test_targets_are_the_samples_masks_without_the_image(fake_voc_root, fake_synth_root, fake_coco_root):
    sets = [VOCSegmentation(fake_voc_root, "train_aug"), VOCSegmentation(fake_synth_root, "train"),
            COCOSegmentation(fake_coco_root, "train", mask_ids="coco")]  # fmt: skip
    for ds in sets:
        for i in range(len(ds)):
            mask, diag = ds.targets(ds.names[i])
            sample = ds[i]
            if mask is None:  # VOC's train_aug image without a mask: the sample's is all ignore
                assert (sample["mask"] == 255).all()
            else:
                np.testing.assert_array_equal(mask, sample["mask"].numpy())
            assert (diag is None) == ("diag" not in sample)
            if diag is not None:
                np.testing.assert_array_equal(diag, sample["diag"].numpy())
    aug = VOCSegmentation(fake_voc_root, "train_aug")
    assert aug.targets("2008_000004") == (None, None)  # no mask: the case is met


def test_voc_explicit_mask_dir(fake_voc_root):
    ds = VOCSegmentation(fake_voc_root, "val", mask_dir="SegmentationClassAug")
    assert _fg(ds[0]["label"]) == [2]


def test_background_only_mask_gives_empty_label(fake_voc_root):
    save_mask_png(fake_voc_root / "SegmentationClass" / "2007_000001.png", np.zeros((24, 32), np.uint8))
    assert VOCSegmentation(fake_voc_root, "train")[0]["label"].sum() == 0


def test_missing_mask_dir(fake_voc_root):
    with pytest.raises(DatasetError, match=r"VOC2012/SegObj: mask folder"):
        VOCSegmentation(fake_voc_root, "train", mask_dir="SegObj")


def test_voc_limit_and_deeplab_split_format(fake_voc_root):
    (fake_voc_root / "ImageSets" / "Segmentation" / "dl.txt").write_text(
        "/JPEGImages/2007_000002.jpg /SegmentationClassAug/2007_000002.png\n"
        "/JPEGImages/2007_000001.jpg /SegmentationClassAug/2007_000001.png\n"
    )
    ds = VOCSegmentation(fake_voc_root, "dl", limit=1)
    assert ds.names == ["2007_000002"]


def test_synth_card_cls_labels_and_diag(fake_synth_root):
    ds = VOCSegmentation(fake_synth_root, "train")
    assert ds.class_names == ("background", "disc", "ring", "bar") and ds.num_classes == 4
    s = ds[0]
    # label from cls_labels.json (3 is listed there though the mask holds only class 1)
    assert _fg(s["label"]) == [1, 3] and s["label"].shape == (3,)
    assert isinstance(s["diag"], tv_tensors.Mask) and s["diag"].shape == (20, 20)
    assert set(s["diag"].unique().tolist()) == {0, 2, 255}


def test_transform_applies_to_whole_sample(fake_voc_root):
    ds = VOCSegmentation(fake_voc_root, "train", transform=train_transform(16))
    s = ds[0]
    assert s["img"].shape == (3, 16, 16) and s["img"].dtype == torch.float32
    assert s["mask"].shape == (16, 16) and s["mask"].dtype == torch.int64
    assert _fg(s["label"]) == [1] and s["name"] == "2007_000001"


def test_collate_and_dataloader(fake_synth_root):
    ds = VOCSegmentation(fake_synth_root, "train", transform=train_transform(16))
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate)))
    assert batch["name"] == ds.names
    assert batch["img"].shape == (3, 3, 16, 16) and batch["mask"].shape == (3, 16, 16)
    assert batch["label"].shape == (3, 3) and batch["diag"].shape == (3, 16, 16)


def test_collate_keeps_unequal_sizes_as_list():
    a = {"name": "a", "img": torch.zeros(3, 4, 5), "label": torch.ones(2)}
    b = {"name": "b", "img": torch.zeros(3, 6, 5), "label": torch.zeros(2), "diag": torch.zeros(6, 5)}
    out = collate([a, b])
    assert out["name"] == ["a", "b"] and out["label"].shape == (2, 2)
    assert isinstance(out["img"], list) and [t.shape[1] for t in out["img"]] == [4, 6]
    assert "diag" not in out  # not in every sample


# --- COCO ----------------------------------------------------------------------------------------


def test_coco_constants():
    assert len(COCO_CLASSES) == 81 and COCO_CLASSES[0] == "background"
    assert len(COCO_CATEGORY_IDS) == 80 and len(set(COCO_CATEGORY_IDS)) == 80
    assert COCO_CATEGORY_IDS[0] == 1 and COCO_CATEGORY_IDS[-1] == 90
    ids = np.array([[0, 1, 13], [90, 255, 27]])
    np.testing.assert_array_equal(coco_category_to_index(ids), [[0, 1, 12], [80, 255, 25]])
    assert COCO_CLASSES[coco_category_to_index(np.array([13]))[0]] == "stop sign"
    with pytest.raises(ValueError, match=r"\[12, 91\]"):
        coco_category_to_index(np.array([12, 91, 1]))


def test_coco_sample_format(fake_coco_root):
    ds = COCOSegmentation(fake_coco_root, "train")
    assert ds.num_classes == 81 and len(ds) == 2
    s = ds[1]
    assert s["name"] == "COCO_train2014_000000000025" and s["img"].shape == (3, 16, 20)
    assert s["label"].shape == (80,) and _fg(s["label"]) == [1, 80]
    assert _fg(COCOSegmentation(fake_coco_root, "val")[0]["label"]) == [3]


def test_coco_raw_category_ids(fake_coco_root):
    path = fake_coco_root / "SegmentationClass" / "train2014" / "COCO_train2014_000000000009.png"
    raw = np.zeros((16, 20), np.uint8)
    raw[:4, :4], raw[8:, 8:], raw[0, -1] = 90, 13, 255
    save_mask_png(path, raw)
    s = COCOSegmentation(fake_coco_root, "train", mask_ids="coco")[0]
    assert set(s["mask"].unique().tolist()) == {0, 12, 80, 255} and _fg(s["label"]) == [12, 80]
    raw[0, 0] = 12  # an id COCO never annotated
    save_mask_png(path, raw)
    with pytest.raises(DatasetError, match=r"COCO_train2014_000000000009\.png.*\[12\]"):
        COCOSegmentation(fake_coco_root, "train", mask_ids="coco")[0]
    Image.new("RGB", (20, 16)).save(path)
    with pytest.raises(DatasetError, match=r"000009\.png: RGB mask"):
        COCOSegmentation(fake_coco_root, "train", mask_ids="coco")[0]
    with pytest.raises(DatasetError, match="mask_ids='raw'"):
        COCOSegmentation(fake_coco_root, "train", mask_ids="raw")


def test_coco_without_split_file_lists_masks(fake_coco_root):
    (fake_coco_root / "ImageSets" / "train.txt").unlink()
    extra = fake_coco_root / "train2014" / "COCO_train2014_000000000001.jpg"
    Image.new("RGB", (20, 16)).save(extra)  # an image without a mask is left out
    ds = COCOSegmentation(fake_coco_root, "train")
    assert ds.names == ["COCO_train2014_000000000009", "COCO_train2014_000000000025"]


# --- factory -------------------------------------------------------------------------------------


def test_build_dataset_kinds_and_limit(fake_voc_root, fake_synth_root, fake_coco_root):
    voc = build_dataset(_cfg("voc", fake_voc_root, 21), "train_aug")
    assert isinstance(voc, VOCSegmentation) and len(voc) == 5
    synth = build_dataset(_cfg("synth", fake_synth_root, 4, limit=2), "train", transform=train_transform(8))
    assert len(synth) == 2 and synth[0]["img"].shape == (3, 8, 8)
    coco = build_dataset(_cfg("coco", fake_coco_root, 81), "val")
    assert isinstance(coco, COCOSegmentation) and len(coco) == 1


def test_build_dataset_mask_dir(fake_voc_root):
    ds = build_dataset(_cfg("voc", fake_voc_root, 21, mask_dir="SegmentationClassAug"), "val")
    assert _fg(ds[0]["label"]) == [2]


def test_build_dataset_reads_the_root_the_config_names(fake_synth_root, monkeypatch):
    monkeypatch.setenv("CPMC_DATA", "/nonexistent")  # no variable overrides data.root
    assert len(build_dataset(_cfg("synth", fake_synth_root, 4), "val")) == 1


# --- bad input -----------------------------------------------------------------------------------


def test_missing_roots(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match=r"nope.*VOCtrainval_11-May-2012.*SegmentationClassAug"):
        VOCSegmentation(tmp_path / "nope", "train")
    with pytest.raises(DatasetError, match=r"python -m cpmc_lib synth --out"):
        build_dataset(_cfg("synth", tmp_path / "nope", 11), "train")
    with pytest.raises(DatasetError, match=r"nope.*train2014"):
        build_dataset(_cfg("coco", tmp_path / "nope", 81), "train")
    with pytest.raises(DatasetError, match=r"no JPEGImages"):
        VOCSegmentation(tmp_path, "train")


def test_unknown_kind(fake_voc_root):
    with pytest.raises(ConfigError, match="data.kind='cityscapes' is not one of 'synth', 'voc', 'coco'"):
        Config().replace(**{"data.kind": "cityscapes", "data.root": str(fake_voc_root)})  # at load
    cfg = Config(data=DataConfig(kind="cityscapes", root=str(fake_voc_root)))  # built by hand
    with pytest.raises(DatasetError, match="synth, voc, coco"):
        build_dataset(cfg, "train")


def test_missing_split_file(fake_voc_root, fake_coco_root):
    with pytest.raises(DatasetError, match=r"ImageSets/Segmentation/test\.txt.*train_aug"):
        VOCSegmentation(fake_voc_root, "test")
    (fake_coco_root / "ImageSets" / "val.txt").unlink()
    (fake_coco_root / "SegmentationClass" / "val2014" / "COCO_val2014_000000000042.png").unlink()
    (fake_coco_root / "SegmentationClass" / "val2014").rmdir()
    with pytest.raises(DatasetError, match=r"ImageSets/val\.txt"):
        COCOSegmentation(fake_coco_root, "val")


def test_split_entry_without_image(fake_voc_root, fake_coco_root):
    (fake_voc_root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000005\n2009_999999\n")
    expected = re.escape(str(fake_voc_root / "JPEGImages" / "2009_999999.jpg"))
    with pytest.raises(
        DatasetError, match=rf"val\.txt: entry '2009_999999' has no image; expected {expected}"
    ):
        VOCSegmentation(fake_voc_root, "val")
    (fake_coco_root / "val2014" / "COCO_val2014_000000000042.jpg").unlink()
    with pytest.raises(DatasetError, match=r"val\.txt: entry 'COCO_val2014_000000000042'.*val2014/COCO_val"):
        COCOSegmentation(fake_coco_root, "val")


def test_corrupt_image(fake_voc_root):
    path = fake_voc_root / "JPEGImages" / "2007_000001.jpg"
    path.write_bytes(b"not a jpeg at all")
    ds = VOCSegmentation(fake_voc_root, "train")  # checked on load, not up front
    with pytest.raises(DatasetError, match=r"2007_000001\.jpg: corrupt"):
        ds[0]
    path.write_bytes(open(fake_voc_root / "JPEGImages" / "2007_000002.jpg", "rb").read()[:200])  # truncated
    with pytest.raises(DatasetError, match=r"2007_000001\.jpg: corrupt"):
        ds[0]


def test_mask_values_out_of_range(fake_voc_root):
    mask = np.zeros((24, 32), np.uint8)
    mask[0, 0], mask[1, 1], mask[2, 2] = 21, 40, 255
    save_mask_png(fake_voc_root / "SegmentationClass" / "2007_000001.png", mask)
    ds = VOCSegmentation(fake_voc_root, "train")
    with pytest.raises(DatasetError, match=r"2007_000001\.png: mask values \[21, 40\] are outside 0\.\.20"):
        ds[0]


def test_rgb_mask(fake_voc_root):
    path = fake_voc_root / "SegmentationClass" / "2007_000002.png"
    Image.new("RGB", (32, 24), (128, 0, 0)).save(path)
    with pytest.raises(DatasetError, match=r"2007_000002\.png: RGB mask.*palette PNG"):
        VOCSegmentation(fake_voc_root, "train")[1]


def test_mask_size_mismatch(fake_voc_root):
    save_mask_png(fake_voc_root / "SegmentationClass" / "2007_000001.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match=r"2007_000001\.png: mask is 10x10 .* is 24x32"):
        VOCSegmentation(fake_voc_root, "train")[0]


def test_no_mask_no_annotation(fake_voc_root):
    (fake_voc_root / "Annotations" / "2008_000004.xml").unlink()
    ds = VOCSegmentation(fake_voc_root, "train_aug")
    with pytest.raises(DatasetError, match=r"2008_000004.*Annotations/2008_000004\.xml"):
        ds[3]


def test_class_count_mismatch(fake_voc_root, fake_synth_root):
    with pytest.raises(DatasetError, match=r"has 21 classes.*data\.num_classes = 11"):
        build_dataset(_cfg("voc", fake_voc_root, 11), "train")
    with pytest.raises(DatasetError, match=r"has 4 classes.*data\.num_classes = 21"):
        build_dataset(_cfg("synth", fake_synth_root, 21), "train")


def test_bad_cls_labels_entry(fake_synth_root):
    (fake_synth_root / "cls_labels.json").write_text('{"train_00000": [0, 4]}')
    with pytest.raises(DatasetError, match=r"cls_labels\.json: entry 'train_00000' holds class ids \[0, 4\]"):
        VOCSegmentation(fake_synth_root, "train")[0]


def test_label_statistics_counts_classes_from_masks(tmp_path):
    import numpy as np
    from conftest import write_jpeg

    from cpmc_lib.datasets import VOCSegmentation, label_statistics
    from cpmc_lib.io import save_mask_png

    root = tmp_path / "VOC2012"
    masks = {"a": [[0, 1], [1, 255]], "b": [[2, 2], [0, 1]], "c": [[0, 0], [0, 0]]}
    for name, m in masks.items():
        write_jpeg(root / "JPEGImages" / f"{name}.jpg", np.array(m, dtype=np.uint8))
        save_mask_png(root / "SegmentationClass" / f"{name}.png", np.array(m, dtype=np.uint8))
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\nc\n")
    stats = label_statistics(VOCSegmentation(root, "train"))
    assert stats["images_per_class"][:3] == [2, 1, 0]  # class 1 in a and b, class 2 in b
    assert stats["cooccurrence"][0][1] == 1
    assert stats["labels_per_image"][:3] == [1, 1, 1]  # c: none, a: one, b: two
    assert abs(stats["pixel_share"][1] - 3 / 11) < 1e-9  # 11 labelled pixels, 3 of class 1


def test_a_16_bit_mask_is_read_when_its_indices_fit_and_refused_otherwise(fake_voc_root):
    path = fake_voc_root / "SegmentationClass" / "2007_000001.png"
    mask = np.array(Image.open(path), dtype=np.uint16)
    Image.fromarray(mask).save(path)  # the same indices, 16 bits wide
    ds = VOCSegmentation(fake_voc_root, "train")
    assert np.array_equal(ds.read_mask(path), mask.astype(np.uint8))
    mask[0, 0] = 300
    Image.fromarray(mask).save(path)
    with pytest.raises(DatasetError, match=r"2007_000001\.png: 16-bit mask PNG with values 0\.\.300; .*8-bit"):
        ds.read_mask(path)


def test_a_split_file_naming_an_image_twice_is_an_error(fake_voc_root):
    (fake_voc_root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001\n2007_000002\n2007_000001\n")
    with pytest.raises(DatasetError, match=r"train\.txt: 1 image\(s\) listed more than once \('2007_000001' on lines 1, 3\)"):
        VOCSegmentation(fake_voc_root, "train")


def test_a_name_with_a_dot_keeps_it(fake_voc_root):
    img = fake_voc_root / "JPEGImages"
    (img / "2007_000001.jpg").rename(img / "2007_000001.v2.jpg")
    (fake_voc_root / "SegmentationClass" / "2007_000001.png").rename(fake_voc_root / "SegmentationClass" / "2007_000001.v2.png")
    sets = fake_voc_root / "ImageSets" / "Segmentation"
    (sets / "train.txt").write_text("2007_000001.v2\n")
    assert VOCSegmentation(fake_voc_root, "train").names == ["2007_000001.v2"]
    (sets / "train.txt").write_text("/JPEGImages/2007_000001.v2.jpg /SegmentationClass/2007_000001.v2.png\n")
    assert VOCSegmentation(fake_voc_root, "train").names == ["2007_000001.v2"]  # DeepLab's list format


def test_an_exif_rotated_jpeg_is_read_upright(fake_voc_root):
    path = fake_voc_root / "JPEGImages" / "2007_000001.jpg"
    upright = np.array(Image.open(path))
    sideways = Image.fromarray(np.rot90(upright, k=1).copy())  # stored turned, as some cameras do
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show it
    sideways.save(path, exif=exif, quality=95)
    ds = VOCSegmentation(fake_voc_root, "train")
    img = ds[0]["img"]
    assert tuple(img.shape[-2:]) == upright.shape[:2]  # upright, and so its mask fits it
    assert np.abs(img.permute(1, 2, 0).numpy().astype(int) - upright.astype(int)).mean() < 8
