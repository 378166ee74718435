"""Shared test fixtures: tiny synthetic datasets and networks built in ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cpmc_lib.io import save_json, save_mask_png, voc_palette

# --- dataset fixtures (tests/test_datasets.py, tests/test_transforms.py) -------------------------


def write_jpeg(path: Path, mask: np.ndarray) -> None:
    """A JPEG whose pixels have the palette colour of ``mask`` (so images and masks agree)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(voc_palette()[mask]).save(path, quality=95)


def square_mask(h: int, w: int, cls: int, top: int = 4, left: int = 6, side: int = 10) -> np.ndarray:
    """(h, w) uint8 background with a ``cls`` square and a 1-pixel ignore (255) frame around it."""
    mask = np.zeros((h, w), np.uint8)
    mask[top - 1 : top + side + 1, left - 1 : left + side + 1] = 255
    mask[top : top + side, left : left + side] = cls
    return mask


def _write_split(path: Path, names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{n}\n" for n in names))


@pytest.fixture
def fake_voc_root(tmp_path: Path) -> Path:
    """A 5-image ``VOCdevkit/VOC2012`` (24x32 images); returns the VOC2012 folder.

    2007_000001  SegmentationClass, class 1 (aeroplane)
    2007_000002  SegmentationClass, classes 12 (dog) and 15 (person)
    2008_000003  SegmentationClassAug only, class 7 (car)
    2008_000004  no mask; Annotations XML with a cat (8) and a dog (12)
    2007_000005  SegmentationClass class 1, and SegmentationClassAug class 2 (to test mask_dir)
    Splits: train = 1, 2; val = 5; train_aug = 1..5.
    """
    root = tmp_path / "VOCdevkit" / "VOC2012"
    h, w = 24, 32
    m2 = square_mask(h, w, 15)
    m2[16:22, 20:30] = 12
    masks = {
        "SegmentationClass": {
            "2007_000001": square_mask(h, w, 1),
            "2007_000002": m2,
            "2007_000005": square_mask(h, w, 1),
        },
        "SegmentationClassAug": {"2008_000003": square_mask(h, w, 7), "2007_000005": square_mask(h, w, 2)},
    }
    for folder, by_name in masks.items():
        for name, mask in by_name.items():
            save_mask_png(root / folder / f"{name}.png", mask)
            write_jpeg(root / "JPEGImages" / f"{name}.jpg", mask)
    write_jpeg(root / "JPEGImages" / "2008_000004.jpg", np.zeros((h, w), np.uint8))
    (root / "Annotations").mkdir()
    (root / "Annotations" / "2008_000004.xml").write_text(
        "<annotation><filename>2008_000004.jpg</filename>"
        "<object><name>cat</name><difficult>0</difficult></object>"
        "<object><name>dog</name><difficult>1</difficult></object></annotation>"
    )
    sets = root / "ImageSets" / "Segmentation"
    _write_split(sets / "train.txt", ["2007_000001", "2007_000002"])
    _write_split(sets / "val.txt", ["2007_000005"])
    _write_split(
        sets / "train_aug.txt", ["2007_000001", "2007_000002", "2008_000003", "2008_000004", "2007_000005"]
    )
    return root


@pytest.fixture
def fake_synth_root(tmp_path: Path) -> Path:
    """A synthetic-benchmark folder (VOC layout, K=4) with a dataset card, cls_labels.json and
    Diagnostics; 3 train images, 1 val image, 20x20."""
    root = tmp_path / "synth"
    class_names = ["background", "disc", "ring", "bar"]
    labels = {}
    for i, (split, cls) in enumerate([("train", 1), ("train", 2), ("train", 3), ("val", 2)]):
        name = f"{split}_{i:05d}"
        mask = square_mask(20, 20, cls, top=3, left=3, side=8)
        save_mask_png(root / "SegmentationClass" / f"{name}.png", mask)
        write_jpeg(root / "JPEGImages" / f"{name}.jpg", mask)
        diag = np.where(mask == 255, 255, (mask > 0) * 2).astype(np.uint8)
        (root / "Diagnostics").mkdir(exist_ok=True)
        Image.fromarray(diag).save(root / "Diagnostics" / f"{name}.png")
        labels[name] = [cls, 3] if i == 0 else [cls]  # image 0 also "contains" class 3 (context)
    for split in ("train", "val"):
        _write_split(
            root / "ImageSets" / "Segmentation" / f"{split}.txt", [n for n in labels if n.startswith(split)]
        )
    save_json(root / "cls_labels.json", labels)
    save_json(root / "dataset_card.json", {"class_names": class_names, "num_classes": len(class_names)})
    return root


@pytest.fixture
def fake_coco_root(tmp_path: Path) -> Path:
    """A COCO 2014 WSSS-layout folder: 2 train images (person 1; toothbrush 80 + person), 1 val
    image (class 3, car), 16x20 masks holding contiguous indices."""
    root = tmp_path / "coco"
    items = {
        "train": {"COCO_train2014_000000000009": [1], "COCO_train2014_000000000025": [80, 1]},
        "val": {"COCO_val2014_000000000042": [3]},
    }
    for split, by_name in items.items():
        for name, classes in by_name.items():
            mask = square_mask(16, 20, classes[0], top=2, left=2, side=6)
            if len(classes) > 1:
                mask[10:14, 12:18] = classes[1]
            save_mask_png(root / "SegmentationClass" / f"{split}2014" / f"{name}.png", mask)
            write_jpeg(root / f"{split}2014" / f"{name}.jpg", np.zeros_like(mask))
        _write_split(root / "ImageSets" / f"{split}.txt", list(by_name))
    return root


# --- a tiny run with hand-made CAMs (tests/test_pseudo.py, tests/test_segmentation.py) ----------


def blurred_cams(mask: np.ndarray, keys: list[int], stride: int = 8) -> np.ndarray:
    """CAM-like maps of the classes ``keys`` from a ground-truth mask: each class indicator averaged
    over ``stride`` x ``stride`` cells, upsampled bilinearly, max-normalised. (k, H, W) float16."""
    import torch
    import torch.nn.functional as F

    ind = torch.tensor(np.stack([mask == k for k in keys]).astype(np.float32))[None]
    low = F.avg_pool2d(ind, stride)
    up = F.interpolate(low, size=mask.shape, mode="bilinear", align_corners=False)[0]
    up = up / (up.amax(dim=(1, 2), keepdim=True) + 1e-5)
    return up.numpy().astype(np.float16)


@pytest.fixture
def tiny_cam_run(tmp_path: Path):
    """A synthetic data set (8 train, 4 val, 64 px) and a run store whose "cams" stage holds
    method "cam": blurred ground-truth maps (:func:`blurred_cams`), best threshold 0.25.

    Returns (cfg, store); CRF in-process, device cpu, a tiny segmentation network.
    """
    from cpmc_lib.config import Config, CrfConfig, DataConfig, PseudoConfig, SegmentationConfig, SynthConfig
    from cpmc_lib.datasets import build_dataset
    from cpmc_lib.mapfile import save_map
    from cpmc_lib.store import RunStore
    from cpmc_lib.synth import generate

    synth = SynthConfig(train=8, val=4, size=64)
    root = tmp_path / "synth"
    generate(synth, root, progress=False, workers=1)
    cfg = Config(
        run="tiny",
        device="cpu",
        runs_dir=str(tmp_path / "runs"),
        synth=synth,
        data=DataConfig(kind="synth", root=str(root), num_classes=11),
        crf=CrfConfig(workers=0),
        pseudo=PseudoConfig(negatives=False),  # no classifier in this hand-made run
        segmentation=SegmentationConfig(
            channels=(8, 16), head_channels=8, epochs=1, batch_size=4, crop_size=48, lr=0.05,
            stand_in=False,  # no pretrain stage in this hand-made run
            test_crf=False,
        ),
    )
    store = RunStore.for_config(cfg)
    ds = build_dataset(cfg, cfg.data.cam_split)
    with store.stage("cams", cfg) as st:
        (st.path / "cam").mkdir()
        for i, name in enumerate(ds.names):
            sample = ds[i]
            keys = [int(k) + 1 for k in np.flatnonzero(sample["label"].numpy())]
            cam = blurred_cams(sample["mask"].numpy(), keys)
            save_map(st.path / "cam", name, np.array(keys), cam)
        save_json(
            st.path / "cam" / "metrics.json",
            {"miou": 0.0, "threshold": 0.25, "method_hash": store.method_key(cfg, "cam")},
        )
    return cfg, store


# A tiny end-to-end run (every stage, one epoch) shared by the pipeline, widget and book tests.
TINY_OVERRIDES = [
    "synth.size=64", "synth.train=24", "synth.val=12", "synth.classes=4", "data.num_classes=5",
    "classifier.epochs=1", "classifier.batch_size=8", "classifier.crop_size=64",
    "segmentation.epochs=1", "segmentation.batch_size=8", "segmentation.crop_size=64", "crf.workers=0",
    "pretrain.images=64", "pretrain.val_images=16", "pretrain.epochs=1", "pretrain.size=64",
    "device=cpu",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """(cfg, metrics) of the whole pipeline on a tiny synthetic set."""
    from cpmc_lib import pipeline
    from cpmc_lib.config import load_config

    root = tmp_path_factory.mktemp("tiny")
    cfg = load_config(
        "configs/default.yaml", [*TINY_OVERRIDES, f"data.root={root / 'data'}", f"runs_dir={root / 'runs'}"]
    )
    return cfg, pipeline.run(cfg, progress=False)


def tiny_camnet(num_classes: int = 4, channels=(8, 16), side_channels=(4, 4, 8)):
    """A seeded 2-stage CamNet (stride 8) in eval mode, for CAM-method tests."""
    import torch

    from cpmc_lib.models import CamNet

    torch.manual_seed(0)
    return CamNet(
        "resnet18", num_classes, out_indices=(0, 1, 2), side_channels=side_channels, output_stride=8,
        layers=(1, 1), channels=channels,
    ).eval()  # fmt: skip
