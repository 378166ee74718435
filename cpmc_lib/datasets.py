"""Dataset loaders: the PASCAL VOC layout (real VOC 2012 and the synthetic benchmark) and MS COCO 2014.

Nothing is ever downloaded: a missing dataset raises :class:`DatasetError` saying where to get it.

**PASCAL VOC 2012** (``data.kind`` "voc"); the root is ``VOCdevkit/VOC2012`` (a root holding
``VOCdevkit/VOC2012`` or ``VOC2012`` is accepted too)::

    JPEGImages/<name>.jpg
    SegmentationClass/<name>.png          official masks (palette PNG, 255 = ignore)
    SegmentationClassAug/<name>.png       SBD-augmented masks (for train_aug)
    Annotations/<name>.xml                object names; image labels when no mask exists
    ImageSets/Segmentation/<split>.txt    train, val, train_aug (10,582 names), ...

Get it from ``VOCtrainval_11-May-2012.tar`` (http://host.robots.ox.ac.uk/pascal/VOC/voc2012/)
and SBD's ``SegmentationClassAug`` (https://www.dropbox.com/s/oeu149j8qtbs1x0/SegmentationClassAug.zip).
The mask of a name is read from ``DataConfig.mask_dir``, or when that is "" from
``SegmentationClass`` if the mask is there, else ``SegmentationClassAug``.

**Synthetic benchmark** (``data.kind`` "synth", written by ``python -m cpmc_lib synth --out DIR``)
uses the same layout plus ``dataset_card.json`` (``class_names``, ``num_classes``),
``cls_labels.json`` (``{name: [class ids 1..K-1]}``) and ``Diagnostics/<name>.png`` (uint8
pathology codes, 255 at borders). Whenever a root has ``dataset_card.json`` the class names come
from it; whenever it has ``cls_labels.json`` the image labels come from it (names missing there
fall back to the mask, then to ``Annotations``).

**MS COCO 2014** (``data.kind`` "coco") as WSSS works lay it out, masks converted to VOC-style PNGs::

    train2014/COCO_train2014_<12 digits>.jpg
    val2014/COCO_val2014_<12 digits>.jpg
    SegmentationClass/train2014/<name>.png    contiguous indices 0..80, 255 = ignore
    SegmentationClass/val2014/<name>.png
    ImageSets/train.txt, ImageSets/val.txt    one name per line

Images come from http://cocodataset.org (train2014.zip, val2014.zip); the masks are rendered from
the instance annotations. Masks holding COCO's raw category ids (1..90, with gaps) instead of
0..80 are remapped with ``mask_ids="coco"`` (see :data:`COCO_CATEGORY_IDS`). Without
``ImageSets/<split>.txt`` the split is every mask in ``SegmentationClass/<split>2014/``, sorted by
name: images without a mask (COCO has a few hundred without annotations) are then left out.

A sample is a dict::

    name   str
    img    tv_tensors.Image uint8 (3, H, W)
    mask   tv_tensors.Mask int64 (H, W), 255 = ignore (all 255 when the image has no mask)
    label  torch.float32 (K-1,), multi-hot over the foreground classes 1..K-1
    diag   tv_tensors.Mask int64 (H, W), only when Diagnostics/<name>.png exists

Example:
    >>> ds = VOCSegmentation("data/synth", "train")  # doctest: +SKIP
    >>> ds[0]["img"].shape, ds[0]["label"].shape  # doctest: +SKIP
    (torch.Size([3, 128, 128]), torch.Size([10]))
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, default_collate
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from .config import Config
from .io import IGNORE_INDEX, read_mask_png

__all__ = [
    "COCO_CATEGORY_IDS",
    "COCO_CLASSES",
    "VOC_CLASSES",
    "COCOSegmentation",
    "DatasetError",
    "SegmentationDataset",
    "VOCSegmentation",
    "build_dataset",
    "coco_category_to_index",
    "collate",
    "detect_layout",
    "label_statistics",
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
    "data.root (or CPMC_DATA) at VOCdevkit/VOC2012; for the synthetic benchmark run "
    "`python -m cpmc_lib synth --out DIR` and point data.root at DIR."
)
_COCO_HELP = (
    "Expected the WSSS MS COCO 2014 layout: train2014/ and val2014/ images from "
    "http://cocodataset.org, VOC-style PNG masks in SegmentationClass/{train2014,val2014}/, and split "
    "lists ImageSets/{train,val}.txt; point data.root (or CPMC_DATA) at that folder."
)


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and the fix."""


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


class SegmentationDataset(Dataset):
    """Shared loading and checks; subclasses say where a name's files lie.

    Subclasses set ``root``, ``split``, ``names`` and ``class_names`` and implement
    :meth:`image_path` and :meth:`mask_path`.

    Attributes:
        root: dataset root.
        split: split name.
        names: image names of the split, in file order (the first ``limit`` if one was given).
        class_names: K names, index 0 "background".
        num_classes: K.
    """

    root: Path
    split: str
    names: list[str]
    class_names: tuple[str, ...]
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None
    _cls_labels: dict[str, list[int]] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, K={self.num_classes})"

    def image_path(self, name: str) -> Path:
        raise NotImplementedError

    def mask_path(self, name: str) -> Path | None:
        """The mask PNG of ``name``, or None when it has none."""
        raise NotImplementedError

    def diag_path(self, name: str) -> Path | None:
        return None

    def missing_mask(self, name: str) -> str:
        """Where the mask of ``name`` was looked for, for an error message."""
        raise NotImplementedError

    def require_masks(self, why: str) -> None:
        """Check that every image of the split has a mask file (e.g. to train on the masks).

        Raises:
            DatasetError: naming the first missing mask file, how many are missing, and ``why``.
        """
        missing = [n for n in self.names if self.mask_path(n) is None]
        if missing:
            raise DatasetError(
                f"{self.missing_mask(missing[0])}: no mask for image {missing[0]!r} of split {self.split!r} "
                f"({len(missing)} of {len(self.names)} images lack one); {why}"
            )

    def label_fallback(self, name: str) -> list[int]:
        """Class ids of ``name`` when it has neither a mask nor a ``cls_labels.json`` entry."""
        raise DatasetError(
            f"{self.root}: image {name!r} of split {self.split!r} has no mask and no entry in cls_labels.json, "
            "so its image label is unknown; add its mask or list it in cls_labels.json"
        )

    def targets(self, name: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(mask, diagnostic codes) of image ``name``, each (H, W) or None where it has none.

        Reads neither the image nor the label: scoring saved maps or labels against the masks
        needs only these, and decoding the image was most of the cost of ``dataset[i]`` there.
        """
        mask_path, diag_path = self.mask_path(name), self.diag_path(name)
        mask = None if mask_path is None else self.read_mask(mask_path)
        return mask, None if diag_path is None else _read_index_png(diag_path)

    def read_mask(self, path: Path) -> np.ndarray:
        """Read a mask PNG as (H, W) class indices; raises :class:`DatasetError` naming the file."""
        mask = _read_index_png(path)
        self._check_values(mask, path)
        return mask

    def _check_values(self, mask: np.ndarray, path: Path) -> None:
        values = np.unique(mask)
        bad = values[(values >= self.num_classes) & (values != IGNORE_INDEX)]
        if bad.size:
            raise DatasetError(
                f"{path}: mask values {bad.tolist()} are outside 0..{self.num_classes - 1} and {IGNORE_INDEX} "
                f"(this dataset has K={self.num_classes} classes); fix the mask or the class list"
            )

    def _read_image(self, path: Path) -> tv_tensors.Image:
        try:
            with Image.open(path) as pil:
                rgb = pil.convert("RGB")  # forces the decode, so a truncated file fails here
        except (OSError, UnidentifiedImageError, SyntaxError) as e:
            raise DatasetError(f"{path}: corrupt or unreadable image ({e}); replace the file") from None
        return F.to_image(rgb)

    def _label(self, name: str, mask: np.ndarray | None) -> torch.Tensor:
        if self._cls_labels is not None and name in self._cls_labels:
            ids = [int(c) for c in self._cls_labels[name]]
            bad = [c for c in ids if not 1 <= c < self.num_classes]
            if bad:
                raise DatasetError(
                    f"{self.root / 'cls_labels.json'}: entry {name!r} holds class ids {bad} outside "
                    f"1..{self.num_classes - 1}; fix the file"
                )
        elif mask is not None:
            ids = [int(c) for c in np.unique(mask) if 0 < c < self.num_classes]
        else:
            ids = self.label_fallback(name)
        label = torch.zeros(self.num_classes - 1, dtype=torch.float32)
        label[[c - 1 for c in ids]] = 1.0
        return label

    def __getitem__(self, i: int) -> dict[str, Any]:
        name = self.names[i]
        img_path = self.image_path(name)
        img = self._read_image(img_path)
        h, w = img.shape[-2:]
        mask_path = self.mask_path(name)
        mask = None if mask_path is None else self.read_mask(mask_path)
        if mask is not None and mask.shape != (h, w):
            raise DatasetError(
                f"{mask_path}: mask is {mask.shape[0]}x{mask.shape[1]} but its image {img_path} is {h}x{w}; "
                "masks must match their images"
            )
        sample: dict[str, Any] = {"name": name, "img": img}
        if mask is None:  # an all-ignore mask keeps unlabelled images batchable
            sample["mask"] = tv_tensors.Mask(torch.full((h, w), IGNORE_INDEX, dtype=torch.int64))
        else:
            sample["mask"] = tv_tensors.Mask(torch.from_numpy(mask.astype(np.int64)))
        sample["label"] = self._label(name, mask)
        diag_path = self.diag_path(name)
        if diag_path is not None:
            diag = _read_index_png(diag_path)
            sample["diag"] = tv_tensors.Mask(torch.from_numpy(diag.astype(np.int64)))
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def _load_cls_labels(self) -> None:
        path = self.root / "cls_labels.json"
        if path.is_file():
            try:
                with open(path) as f:
                    self._cls_labels = json.load(f)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}: not valid JSON ({e}); re-create it") from None
            if not isinstance(self._cls_labels, dict):
                raise DatasetError(f"{path}: expected a mapping {{name: [class ids]}}")

    def _check_images(self, split_file: Path | str) -> None:
        for name in self.names:
            path = self.image_path(name)
            if not path.is_file():
                raise DatasetError(
                    f"{split_file}: entry {name!r} has no image; expected {path}. "
                    "Restore the image or remove the entry from the split file"
                )


def _read_index_png(path: Path) -> np.ndarray:
    """:func:`io.read_mask_png` with its errors turned into :class:`DatasetError` naming the file."""
    try:
        return read_mask_png(path)
    except ValueError as e:  # read_mask_png's RGB refusal
        raise DatasetError(
            f"{path}: RGB mask; save masks as palette PNGs holding class indices ({e})"
        ) from None
    except (OSError, UnidentifiedImageError) as e:
        raise DatasetError(f"{path}: cannot read mask PNG ({e}); re-create the file") from None


def _read_split_file(path: Path, limit: int) -> list[str]:
    # The first token of each line, without folder or extension: accepts plain name lists, VOC
    # "name  1" lists and DeepLab's "/JPEGImages/x.jpg /SegmentationClassAug/x.png" lists.
    with open(path) as f:
        names = [Path(line.split()[0]).stem for line in f if line.strip()]
    if not names:
        raise DatasetError(f"{path}: split file has no entries")
    return names[:limit] if limit > 0 else names


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
        try:
            return coco_category_to_index(_read_index_png(path))
        except ValueError as e:
            raise DatasetError(
                f"{path}: {e} (data.mask_ids='coco'); fix the mask or set data.mask_ids"
            ) from None


def detect_layout(root: str | os.PathLike) -> str | None:
    """Which real data set's layout the folder ``root`` has: "voc", "coco", or None.

    "voc": ``JPEGImages/`` beside ``SegmentationClass/``, ``SegmentationClassAug/``, ``Annotations/``
    or ``ImageSets/``, in ``root`` or in ``VOC2012/``, ``VOCdevkit/VOC2012/`` below it. "coco": a
    ``train2014/``, ``val2014/``, ``train2017/`` or ``val2017/`` image folder. The synthetic
    benchmark has the VOC layout too: tell it apart by its ``dataset_card.json`` first. Reads only
    folder names, never a file.
    """
    root = Path(root)
    for sub in (".", "VOC2012", "VOCdevkit/VOC2012"):
        d = root / sub
        if (d / "JPEGImages").is_dir() and any(
            (d / m).is_dir()
            for m in ("SegmentationClass", "SegmentationClassAug", "Annotations", "ImageSets")
        ):
            return "voc"
    if any((root / f"{split}{year}").is_dir() for split in ("train", "val") for year in (2014, 2017)):
        return "coco"
    return None


def build_dataset(
    cfg: Config, split: str, transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> SegmentationDataset:
    """The dataset ``cfg.data`` describes, for ``split``.

    "synth" and "voc" read the VOC layout, "coco" the COCO 2014 layout; the root is
    ``cfg.data_root()`` and ``cfg.data.limit`` keeps the first N names.

    Raises:
        DatasetError: unknown kind, any loader error, or a class count other than
            ``cfg.data.num_classes``.
    """
    data, root = cfg.data, cfg.data_root()
    if data.kind in ("synth", "voc"):
        if data.kind == "synth" and not root.is_dir():
            raise DatasetError(
                f"synthetic dataset root {root} does not exist; generate it with "
                f"`python -m cpmc_lib synth --out {root}` (or set data.root / CPMC_DATA)"
            )
        ds: SegmentationDataset = VOCSegmentation(
            root, split, transform, mask_dir=data.mask_dir, limit=data.limit
        )
    elif data.kind == "coco":
        ds = COCOSegmentation(root, split, transform, mask_ids=data.mask_ids, limit=data.limit)
    else:
        raise DatasetError(f"data.kind={data.kind!r} is not one of: synth, voc, coco")
    if ds.num_classes != data.num_classes:
        raise DatasetError(
            f"{ds.root}: the dataset has {ds.num_classes} classes (incl. background) but data.num_classes = "
            f"{data.num_classes}; set data.num_classes={ds.num_classes}"
        )
    return ds


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch sample dicts for a DataLoader: tensors stacked, names kept as a list.

    Tensors whose shapes differ across the batch (full-size images at evaluation) are kept as a
    list instead of stacked. Only keys present in every sample are kept (``diag`` exists only for
    datasets that ship diagnostics).

    Returns:
        dict with ``name`` list[str], ``img`` (B, 3, H, W), ``mask`` (B, H, W), ``label`` (B, K-1), ...
    """
    keys = [k for k in batch[0] if all(k in s for s in batch)]
    out: dict[str, Any] = {}
    for k in keys:
        values = [s[k] for s in batch]
        if isinstance(values[0], torch.Tensor) and len({tuple(v.shape) for v in values}) > 1:
            out[k] = [v.as_subclass(torch.Tensor) for v in values]
        else:
            out[k] = default_collate(values)
    return out


def label_statistics(ds: SegmentationDataset, progress: bool = False) -> dict[str, Any]:
    """Class statistics of a split, read from its masks (images are not decoded).

    Returns:
        dict with ``images_per_class`` (K-1,), ``pixel_share`` (K,) of labelled pixels per class,
        ``labels_per_image`` histogram (index = number of classes in the image), and
        ``cooccurrence`` (K-1, K-1): images holding both classes.
    """
    from .progress import tqdm

    k = ds.num_classes
    pixels = np.zeros(k, dtype=np.int64)
    co = np.zeros((k - 1, k - 1), dtype=np.int64)
    per_image: list[int] = []
    for name in tqdm(ds.names, desc="label statistics", disable=not progress):
        path = ds.mask_path(name)
        if path is None:
            continue
        mask = ds.read_mask(path)
        pixels += np.bincount(mask[mask != IGNORE_INDEX].ravel(), minlength=k)[:k]
        present = np.zeros(k - 1, dtype=np.int64)
        present[[c - 1 for c in np.unique(mask) if 0 < c < k]] = 1
        co += np.outer(present, present)
        per_image.append(int(present.sum()))
    return {
        "images_per_class": np.diag(co).tolist(),
        "pixel_share": (pixels / max(pixels.sum(), 1)).tolist(),
        "labels_per_image": np.bincount(np.asarray(per_image, dtype=np.int64), minlength=1).tolist(),
        "cooccurrence": co.tolist(),
    }
