"""The loaders' base: :class:`SegmentationDataset`, :class:`DatasetError` and the shared file readers.

:class:`SegmentationDataset` loads and checks a sample (image, mask, multi-hot label, diagnostic
codes) once a subclass says where a name's files lie; the readers of mask PNGs and split files turn
a bad file into a :class:`DatasetError` that names it. The layouts and the sample dict are
described in :mod:`cpmc_lib.datasets`, which re-exports these names; the VOC and COCO subclasses
are in :mod:`cpmc_lib.voc_coco`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from .io import IGNORE_INDEX, read_image_rgb, read_mask_png

__all__ = ["DatasetError", "SegmentationDataset"]


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file and the fix."""


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
            rgb = read_image_rgb(path)  # upright by its EXIF orientation; decoded, so a truncated file fails here
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
    except ValueError as e:  # read_mask_png's refusal: an RGB mask, a 16-bit one with large values
        raise DatasetError(str(e)) from None
    except (OSError, UnidentifiedImageError) as e:
        raise DatasetError(f"{path}: cannot read mask PNG ({e}); re-create the file") from None


_FILE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _read_split_file(path: Path, limit: int) -> list[str]:
    """The image names of a split file, in order.

    The first token of each line, without folder and without an image or mask extension: accepts
    plain name lists, VOC "name  1" lists and DeepLab's "/JPEGImages/x.jpg /SegmentationClassAug/x.png"
    lists; a name with a dot of its own ("a.b") keeps it.

    Raises:
        DatasetError: the file is empty or names an image twice (the file, the names and their lines).
    """
    names, lines = [], {}
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            token = Path(line.split()[0]).name
            name = token[: -len(Path(token).suffix)] if Path(token).suffix.lower() in _FILE_SUFFIXES else token
            names.append(name)
            lines.setdefault(name, []).append(i)
    if not names:
        raise DatasetError(f"{path}: split file has no entries")
    twice = {n: ls for n, ls in lines.items() if len(ls) > 1}
    if twice:
        shown = "; ".join(f"{n!r} on lines {', '.join(map(str, ls))}" for n, ls in list(twice.items())[:5])
        raise DatasetError(f"{path}: {len(twice)} image(s) listed more than once ({shown}); keep each name once")
    return names[:limit] if limit > 0 else names
