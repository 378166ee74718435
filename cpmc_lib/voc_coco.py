"""The PASCAL VOC 2012 and MS COCO 2014 specifics: class names, COCO's category ids and the two loaders.

:class:`VOCSegmentation` reads the VOC layout (real VOC 2012 and the synthetic benchmark),
:class:`COCOSegmentation` the WSSS COCO 2014 layout; :func:`coco_category_to_index` maps COCO's
raw category ids to contiguous class indices. The layouts are described in
:mod:`cpmc_lib.datasets`, which re-exports these names and builds the dataset a config asks for.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from .dataset_base import DatasetError, SegmentationDataset, _read_index_png, _read_split_file
from .io import IGNORE_INDEX

__all__ = [
    "COCO_CATEGORY_IDS",
    "COCO_CLASSES",
    "VOC_CLASSES",
    "COCOSegmentation",
    "VOCSegmentation",
    "coco_category_to_index",
]

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

COCO_CLASSES = (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie",
    "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

# COCO's category id of each contiguous class 1..80 (ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83
# were defined in the paper but never annotated).
COCO_CATEGORY_IDS = (
    *range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83),
    *range(84, 91),
)  # fmt: skip
_COCO_ID_TO_INDEX = MappingProxyType({cat: i + 1 for i, cat in enumerate(COCO_CATEGORY_IDS)})

_VOC_HELP = (
    "Expected a PASCAL VOC layout (JPEGImages/, SegmentationClass/ or SegmentationClassAug/, "
    "ImageSets/Segmentation/<split>.txt). For real VOC, extract VOCtrainval_11-May-2012.tar "
    "(http://host.robots.ox.ac.uk/pascal/VOC/voc2012/) and add SBD's SegmentationClassAug, then point "
    "data.root (--data DIR) at VOCdevkit/VOC2012; for the synthetic benchmark run "
    "`python -m cpmc_lib synth --out DIR` and point data.root at DIR."
)
_COCO_HELP = (
    "Expected the WSSS MS COCO 2014 layout: train2014/ and val2014/ images from "
    "http://cocodataset.org, VOC-style PNG masks in SegmentationClass/{train2014,val2014}/, and split "
    "lists ImageSets/{train,val}.txt; point data.root (--data DIR) at that folder."
)


def coco_category_to_index(ids: np.ndarray) -> np.ndarray:
    """Map COCO category ids (1..90 with gaps) to contiguous class indices 1..80.

    0 (background) and 255 (ignore) are kept.

    Args:
        ids: integer array of any shape.

    Returns:
        uint8 array of the same shape.

    Raises:
        ValueError: if ``ids`` holds a value that is no COCO category id, 0 or 255.
    """
    ids = np.asarray(ids)
    lut = np.full(256, -1, dtype=np.int64)
    lut[0], lut[IGNORE_INDEX] = 0, IGNORE_INDEX
    for cat, idx in _COCO_ID_TO_INDEX.items():
        lut[cat] = idx
    bad = np.unique(ids[(ids < 0) | (ids > 255)])
    if bad.size == 0:
        bad = np.unique(ids[lut[ids] < 0])
    if bad.size:
        raise ValueError(f"values {bad.tolist()} are not COCO category ids (nor 0 or 255)")
    return lut[ids].astype(np.uint8)


class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC 2012 layout: real VOC (with SBD's augmented masks) or the synthetic benchmark.

    Args:
        root: ``VOCdevkit/VOC2012`` (or a folder holding it), or a synthetic dataset's folder.
        split: name of a list in ``ImageSets/Segmentation/`` (train, val, train_aug, ...).
        transform: applied to the whole sample dict (see :mod:`cpmc_lib.transforms`).
        mask_dir: folder of masks under ``root``; "" = ``SegmentationClass`` if the name's mask is
            there, else ``SegmentationClassAug``.
        limit: keep only the first ``limit`` names (0 = all).

    Raises:
        DatasetError: missing root, split file or image; bad ``dataset_card.json``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        mask_dir: str = "",
        limit: int = 0,
    ):
        self.root = self._find_root(Path(root))
        self.split = split
        self.transform = transform
        self.mask_dirs = (mask_dir,) if mask_dir else ("SegmentationClass", "SegmentationClassAug")
        if mask_dir and not (self.root / mask_dir).is_dir():
            raise DatasetError(
                f"{self.root / mask_dir}: mask folder (data.mask_dir={mask_dir!r}) does not exist"
            )
        self.class_names = self._read_class_names()
        split_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.is_file():
            have = sorted(p.stem for p in split_file.parent.glob("*.txt"))
            raise DatasetError(
                f"{split_file}: split file of split {split!r} does not exist (splits here: {', '.join(have) or 'none'}). "
                "train_aug.txt comes with SBD's SegmentationClassAug"
            )
        self.names = _read_split_file(split_file, limit)
        self._check_images(split_file)
        self._load_cls_labels()

    @staticmethod
    def _find_root(root: Path) -> Path:
        if not root.is_dir():
            raise DatasetError(f"dataset root {root} does not exist. {_VOC_HELP}")
        for sub in (".", "VOC2012", "VOCdevkit/VOC2012"):
            if (root / sub / "JPEGImages").is_dir():
                return root / sub  # pathlib drops the "."
        raise DatasetError(f"{root}: no JPEGImages/ folder (nor VOCdevkit/VOC2012/JPEGImages/). {_VOC_HELP}")

    def _read_class_names(self) -> tuple[str, ...]:
        card = self.root / "dataset_card.json"
        if not card.is_file():
            return VOC_CLASSES
        with open(card) as f:
            d = json.load(f)
        if d.get("complete") is False:
            raise DatasetError(
                f"{card}: the synthetic generation of {self.root} did not finish (complete: false); "
                "rerun the pipeline or `python -m cpmc_lib synth` with the same settings to finish it"
            )
        names = tuple(d.get("class_names", ()))
        if len(names) < 2 or names[0] != "background":
            raise DatasetError(
                f"{card}: class_names must list K names starting with 'background', got {names}"
            )
        if "num_classes" in d and d["num_classes"] != len(names):
            raise DatasetError(
                f"{card}: num_classes={d['num_classes']} but class_names has {len(names)} names"
            )
        return names

    def image_path(self, name: str) -> Path:
        return self.root / "JPEGImages" / f"{name}.jpg"

    def mask_path(self, name: str) -> Path | None:
        for d in self.mask_dirs:
            path = self.root / d / f"{name}.png"
            if path.is_file():
                return path
        return None

    def missing_mask(self, name: str) -> str:
        paths = [self.root / d / f"{name}.png" for d in self.mask_dirs]
        return f"{paths[-1]} does not exist" + "".join(f" (nor {p})" for p in paths[:-1])

    def diag_path(self, name: str) -> Path | None:
        path = self.root / "Diagnostics" / f"{name}.png"
        return path if path.is_file() else None

    def label_fallback(self, name: str) -> list[int]:
        """Class ids from ``Annotations/<name>.xml`` (object names -> class ids)."""
        xml = self.root / "Annotations" / f"{name}.xml"
        if not xml.is_file():
            raise DatasetError(
                f"image {name!r} of split {self.split!r} has no mask in {' or '.join(self.mask_dirs)} and no "
                f"annotation {xml}; add its mask (SBD's SegmentationClassAug covers train_aug) or its XML"
            )
        try:
            objects = [o.findtext("name", "").strip() for o in ET.parse(xml).getroot().iter("object")]
        except ET.ParseError as e:
            raise DatasetError(f"{xml}: not valid XML ({e}); re-extract it") from None
        unknown = sorted(set(objects) - set(self.class_names))
        if unknown:
            raise DatasetError(
                f"{xml}: object names {unknown} are not classes of this dataset ({self.class_names[1:]})"
            )
        return sorted({self.class_names.index(o) for o in objects})


class COCOSegmentation(SegmentationDataset):
    """MS COCO 2014 with VOC-style PNG masks, as WSSS works lay it out (81 classes).

    Args:
        root: folder holding ``train2014/``, ``val2014/``, ``SegmentationClass/`` and ``ImageSets/``.
        split: "train" or "val" (any ``<split>2014`` folder works).
        transform: applied to the whole sample dict.
        mask_ids: "contiguous" (masks hold 0..80) or "coco" (raw category ids, remapped to 0..80).
        limit: keep only the first ``limit`` names (0 = all).

    Raises:
        DatasetError: missing root, split list (and mask folder), or image; bad ``mask_ids``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        mask_ids: str = "contiguous",
        limit: int = 0,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset root {self.root} does not exist. {_COCO_HELP}")
        if mask_ids not in ("contiguous", "coco"):
            raise DatasetError(f"data.mask_ids={mask_ids!r} is not one of: contiguous, coco")
        self.split = split
        self.transform = transform
        self.mask_ids = mask_ids
        self.class_names = COCO_CLASSES
        self.image_dir = self.root / f"{split}2014"
        self.mask_dir = self.root / "SegmentationClass" / f"{split}2014"
        split_file = self.root / "ImageSets" / f"{split}.txt"
        if split_file.is_file():
            self.names = _read_split_file(split_file, limit)
        elif self.mask_dir.is_dir():
            names = sorted(p.stem for p in self.mask_dir.glob("*.png"))
            if not names:
                raise DatasetError(f"{self.mask_dir}: no masks, and no split file {split_file}. {_COCO_HELP}")
            self.names = names[:limit] if limit > 0 else names
            split_file = self.mask_dir  # what the image check below names as the source of the list
        else:
            raise DatasetError(
                f"{split_file}: split file of split {split!r} does not exist, nor does the mask folder "
                f"{self.mask_dir} to list instead. {_COCO_HELP}"
            )
        self._check_images(split_file)
        self._load_cls_labels()

    def image_path(self, name: str) -> Path:
        return self.image_dir / f"{name}.jpg"

    def mask_path(self, name: str) -> Path | None:
        path = self.mask_dir / f"{name}.png"
        return path if path.is_file() else None

    def missing_mask(self, name: str) -> str:
        return f"{self.mask_dir / f'{name}.png'} does not exist"

    def read_mask(self, path: Path) -> np.ndarray:
        """Read a mask PNG as (H, W) indices 0..80, remapping raw category ids if ``mask_ids="coco"``."""
        if self.mask_ids == "contiguous":
            return super().read_mask(path)
        indices = _read_index_png(path)  # its own errors name the file
        try:
            return coco_category_to_index(indices)
        except ValueError as e:
            raise DatasetError(
                f"{path}: {e} (data.mask_ids='coco'); fix the mask or set data.mask_ids"
            ) from None
