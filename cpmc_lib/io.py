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
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "IGNORE_INDEX",
    "atomic_write",
    "recover_dir",
    "replace_dir",
    "load_json",
    "read_image_rgb",
    "read_mask_png",
    "save_json",
    "load_torch",
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


def replace_dir(new: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Put the finished folder ``new`` in the place of ``dst``; the previous ``dst`` is removed only after.

    Two renames: ``dst`` to ``.<name>.old`` beside it, then ``new`` to ``dst``; the old folder is
    deleted last. A crash between the renames leaves ``.<name>.old`` and no ``dst``:
    :func:`recover_dir` puts it back, so the last finished folder is never lost.
    """
    new, dst = Path(new), Path(dst)
    old = dst.with_name(f".{dst.name}.old")
    if old.exists() and dst.exists():  # the leftover of a finished replacement
        shutil.rmtree(old)
    recover_dir(dst)
    if dst.exists():
        os.replace(dst, old)
    os.replace(new, dst)
    if old.exists():
        shutil.rmtree(old)
    return dst


def recover_dir(dst: str | os.PathLike) -> bool:
    """Undo a :func:`replace_dir` interrupted between its renames: ``.<name>.old`` back to ``dst``
    when ``dst`` is missing. Returns True when it did."""
    dst = Path(dst)
    old = dst.with_name(f".{dst.name}.old")
    if old.is_dir() and not dst.exists():
        os.replace(old, dst)
        return True
    return False


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


def load_torch(path: str | os.PathLike, what: str, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load`` of a file this project wrote (weights, a checkpoint) that executes nothing.

    ``weights_only=True``: tensors, numbers, strings and containers of them load; anything that would
    run code while unpickling is refused. The file must hold a dict (a state dict or a checkpoint).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is damaged, not a torch file, holds objects beyond tensors, or is not a
            dict; the message names the file, what it should be, and the fix.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, AttributeError, TypeError) as e:
        raise ValueError(
            f"{path}: cannot read it as {what} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); the file is "
            "damaged or was not written by this project. Delete it and rerun the stage that makes it"
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {what} must be a dict of tensors (a state dict), got {type(obj).__name__}")
    return obj


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

    Palette ("P") and single-channel ("L") PNGs hold indices directly; a 16-bit grey PNG is read
    when its values fit 0..255. An RGB PNG is an error, because its colours would have to be mapped
    back through the palette: save it with a palette.

    Raises:
        ValueError: an RGB(A) mask, or a 16-bit one with values above 255; the message names the file and the fix.
    """
    with Image.open(path) as img:
        if img.mode in ("P", "L"):
            return np.array(img, dtype=np.uint8)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            wide = np.array(img)
            if wide.size and (wide.min() < 0 or wide.max() > 255):
                raise ValueError(
                    f"{path}: 16-bit mask PNG with values {int(wide.min())}..{int(wide.max())}; masks hold class "
                    "indices 0..255 (255 = ignore). Save it as an 8-bit palette or grey PNG of those indices"
                )
            return wide.astype(np.uint8)
        what = "RGB mask" if img.mode.startswith("RGB") else "mask PNG"
        raise ValueError(
            f"{path}: {what} (mode {img.mode!r}): save masks as palette PNGs (or 8-bit grey ones) holding "
            "class indices (255 = ignore); convert RGB masks with the VOC palette first"
        )


def read_image_rgb(path: str | os.PathLike) -> Image.Image:
    """An image file as RGB, turned upright by its EXIF orientation (as a viewer shows it).

    Cameras store some JPEGs sideways with an orientation tag; without it applied, the pixels a
    mask was drawn on (upright) would not be the pixels read. Decoding is forced here, so a
    truncated file fails at once.
    """
    with Image.open(path) as pil:
        return ImageOps.exif_transpose(pil).convert("RGB")
