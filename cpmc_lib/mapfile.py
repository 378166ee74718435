"""The saved-map format: one file per image of one CAM method's maps (IRN's ``<name>.npy``, made safe).

Every stage that writes or reads CAMs goes through this module: the cams stage saves them, the
pseudo labels, the dataset card and the chapters read them. A file holds the maps of the image's
*present* classes only:

- ``keys``: (k,) int64 class ids in ``1 .. K-1`` (background is not stored);
- ``cam``: (k, H, W) float16 maps at image size, each max-normalised to ``[0, 1]``.

The file is an uncompressed ``.npz`` (two named arrays) read with ``allow_pickle=False``: loading
executes nothing, unlike IRN's pickled dict. Files are written atomically (:func:`cpmc_lib.io.atomic_write`).

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> save_map(folder, "2007_000032", np.array([3]), np.ones((1, 2, 2)))
    >>> m = load_map(folder, "2007_000032")
    >>> m.keys.tolist(), m.cam.dtype.name, m.cam.shape
    ([3], 'float16', (1, 2, 2))
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from .io import atomic_write

__all__ = ["SUFFIX", "SavedMap", "load_map", "map_path", "save_map"]

SUFFIX = ".npz"


class SavedMap(NamedTuple):
    """One image's saved maps: ``keys`` (k,) class ids and ``cam`` (k, H, W) float16."""

    keys: np.ndarray
    cam: np.ndarray


def map_path(folder: str | Path, name: str) -> Path:
    """The file of image ``name`` in a method's map folder."""
    return Path(folder) / f"{name}{SUFFIX}"


def save_map(folder: str | Path, name: str, keys: np.ndarray, cam: np.ndarray) -> None:
    """Write one image's maps (``cam`` is stored as float16, ``keys`` as int64), atomically.

    Raises:
        ValueError: ``cam`` is not (k, H, W) with one map per key.
    """
    keys, cam = np.asarray(keys, dtype=np.int64).reshape(-1), np.asarray(cam)
    if cam.ndim != 3 or cam.shape[0] != keys.size:
        raise ValueError(f"{map_path(folder, name)}: maps {cam.shape} do not match the {keys.size} class ids")
    with atomic_write(map_path(folder, name), "wb") as f:
        np.savez(f, keys=keys, cam=cam.astype(np.float16))


def load_map(folder: str | Path, name: str) -> SavedMap:
    """Read one image's maps.

    Raises:
        FileNotFoundError: no such file; the message names the method's folder and the stage that makes it.
        ValueError: the file is not a map file of this format (damaged, or from another program).
    """
    path = map_path(folder, name)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: the maps of {Path(folder).name!r} for image {name!r} are missing; "
            f"make them with `python -m cpmc_lib cams --method {Path(folder).name}` (same --config and --set)"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            return SavedMap(f["keys"].astype(np.int64), f["cam"])
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path} is not a readable map file ({e}); delete it and make the maps again") from None
