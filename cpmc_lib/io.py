"""Atomic artifact writing and the PASCAL VOC mask format.

Every file the library writes goes through :func:`atomic_write`: the data lands in a temporary
file beside the target and is renamed over it only when complete, so a run killed mid-write
leaves the previous artifact (or nothing) and never a half-written file that a later stage reads.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "IGNORE_INDEX",
    "atomic_write",
    "load_json",
    "read_mask_png",
    "save_json",
    "save_mask_png",
    "save_torch",
    "voc_palette",
]

IGNORE_INDEX = 255


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds.

    On any failure the temporary file is removed and ``path`` keeps its previous version (or stays
    absent). An ``OSError`` (a full disk, ``ENOSPC``; no permission) is raised again, of the same
    type and errno, with a message that names ``path``.

    Example:
        >>> with atomic_write("out.json", "w") as f:  # doctest: +SKIP
        ...     f.write("{}")
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError) and not getattr(e, "_names_target", False):
            raise _naming(e, path, tmp) from e
        raise


def _naming(e: OSError, path: Path, tmp: str | None) -> OSError:
    """``e`` again (same errno, so the same ``OSError`` subclass), its message naming ``path``."""
    what = e.strerror or str(e)
    if e.filename and str(e.filename) not in (str(path), tmp):
        what += f" ({e.filename})"
    message = f"{what}, while writing {path}; its previous version, if any, is kept"
    named = OSError(e.errno, message) if e.errno is not None else OSError(message)
    named._names_target = True  # an enclosing atomic_write keeps this message
    return named


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")
    return Path(path)


def load_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (the bit-interleaving scheme of the VOC devkit).

    Returns:
        uint8 array of shape (n, 3); entry 0 is black (background), 255 is (224, 224, 192) (ignore).
    """
    return _voc_palette(n).copy()


@functools.lru_cache(maxsize=4)
def _voc_palette(n: int) -> np.ndarray:
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def save_mask_png(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """Save an (H, W) array of class indices (255 = ignore) as a VOC palette PNG, atomically."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape} for {path}")
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette(voc_palette().reshape(-1).tolist())
    with atomic_write(path, "wb") as f:
        img.save(f, format="PNG")
    return Path(path)


def read_mask_png(path: str | os.PathLike) -> np.ndarray:
    """Read a VOC-style mask PNG into an (H, W) uint8 array of class indices.

    Palette ("P") and single-channel ("L") PNGs hold indices directly. An RGB PNG is an error,
    because its colours would have to be mapped back through the palette: save it with a palette.
    """
    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise ValueError(
                f"{path}: mask PNG has mode {img.mode!r}; expected a palette ('P') or grey ('L') PNG "
                "holding class indices (255 = ignore). Convert RGB masks with the VOC palette first."
            )
        return np.array(img, dtype=np.uint8)
