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

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from .config import Config
from .dataset_base import DatasetError, SegmentationDataset
from .io import IGNORE_INDEX
from .voc_coco import (
    COCO_CATEGORY_IDS,
    COCO_CLASSES,
    VOC_CLASSES,
    COCOSegmentation,
    VOCSegmentation,
    coco_category_to_index,
)

# The base class and readers live in dataset_base, the VOC and COCO loaders in voc_coco; their
# public names are re-exported here, so ``datasets.X`` reaches all of them.
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
                f"`python -m cpmc_lib synth --out {root}` (or set data.root: --data DIR)"
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
