"""Whose folder: may the synthetic generator write into a folder?

:func:`check_folder` reads folder names and ``dataset_card.json`` only. The generator writes only
into a missing or empty folder, or one whose card it wrote itself with the same settings (the card's
``generator`` and ``version`` fields say whose folder it is); anything else is a
:class:`DataFolderError` naming the folder, the reason and the fix. :mod:`cpmc_lib.synth`
re-exports these names.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .config import SynthConfig
from .io import load_json

__all__ = ["GENERATOR_VERSION", "DataFolderError", "check_folder", "generated_card"]

GENERATOR_VERSION = "cpmc-synth-1"
_GENERATOR = "cpmc_lib.synth"  # the card's "generator": whose folder it is


class DataFolderError(ValueError):
    """The generator was pointed at a folder it must not write into; nothing was written.

    The message names the folder, why (real data, a synthetic set of other settings, unknown
    files) and the fix. ``differences`` maps each differing setting to (card value, config value).
    """

    def __init__(self, message: str, folder: Path, differences: dict[str, tuple[Any, Any]] | None = None):
        super().__init__(message)
        self.folder = folder
        self.differences = differences or {}


_OTHER_DATA = (
    "Nothing was written: the generator writes only into an empty folder or its own. For the "
    "synthetic benchmark choose a new or empty folder: --set data.root=DIR or --data DIR (--out DIR "
    "for `python -m cpmc_lib synth`)."
)


def _read_card(path: Path) -> dict[str, Any] | None:
    """The card at ``path`` if it is a JSON object this generator wrote, else None."""
    try:
        card = load_json(path)
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) and card.get("generator") == _GENERATOR else None


def _differences(card: dict[str, Any], cfg: SynthConfig) -> dict[str, tuple[Any, Any]]:
    """Settings where the card and ``cfg`` differ: {key: (card value, config value)}."""
    have, want = card.get("params") or {}, dataclasses.asdict(cfg)
    missing = "(not set)"
    diffs = {k: (have.get(k, missing), v) for k, v in want.items() if have.get(k, missing) != v}
    diffs.update({k: (v, missing) for k, v in have.items() if k not in want})
    if card.get("version") != GENERATOR_VERSION:
        diffs["version"] = (card.get("version"), GENERATOR_VERSION)
    return diffs


def _other_settings_message(out: Path, card: dict[str, Any], diffs: dict[str, tuple[Any, Any]]) -> str:
    state = "an unfinished generation (complete: false)" if card.get("complete") is False else "the data set"
    listed = ", ".join(
        f"{'generator version' if k == 'version' else 'synth.' + k} {a!r} vs {b!r}"
        for k, (a, b) in diffs.items()
    )
    params = {
        k: a for k, (a, _) in diffs.items() if k != "version" and k in dataclasses.asdict(SynthConfig())
    }
    settable = " ".join(f"--set synth.{k}={a}" for k, a in params.items())
    flags = " ".join(f"--{k.replace('_', '-')} {a}" for k, a in params.items())
    tail = "-".join(f"{k}{b}" for k, (_, b) in list(diffs.items())[:2] if k != "version") or "new"
    alt = f"{out}-{tail}".replace(" ", "")
    use = (
        f"To use the folder as it is, run with its settings: {settable} (for `python -m cpmc_lib synth`: {flags}). "
        if settable and "version" not in diffs
        else ""
    )
    return (
        f"{out} holds {state} of the synthetic generator made with other settings (its dataset_card.json vs your config: {listed}). "
        f"Nothing was written: a data set is never regenerated in place. {use}"
        f"To generate your settings, choose another folder: --set data.root={alt} or --data {alt} "
        f"(--out {alt} for the synth command), or delete {out} yourself first."
    )


def generated_card(cfg: SynthConfig, out: str | Path) -> dict[str, Any] | None:
    """The card of ``out`` when this generator wrote it (with ``cfg``'s settings); None when ``out``
    holds no card of this generator (missing, empty, or another data set).

    Raises:
        DataFolderError: ``out`` holds this generator's data set with other settings.
    """
    out = Path(out)
    card = _read_card(out / "dataset_card.json")
    if card is not None and (diffs := _differences(card, cfg)):
        raise DataFolderError(_other_settings_message(out, card, diffs), out, diffs)
    return card


def check_folder(cfg: SynthConfig, out: str | Path) -> dict[str, Any] | None:
    """May the generator write ``cfg``'s data set into ``out``? Reads folder names and the card only.

    Returns:
        The card when ``out`` holds this generator's finished data set with ``cfg`` (reuse it);
        None when generating is safe: ``out`` is missing or empty, or holds this generator's
        unfinished generation with ``cfg`` (finish it).

    Raises:
        DataFolderError: ``out`` is a file; holds this generator's card with other settings (the
            message lists each setting, card vs config, and the ``--set`` that matches the
            folder); looks like PASCAL VOC or COCO (names ``configs/voc.yaml`` /
            ``configs/coco.yaml``); or is any other non-empty folder.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataFolderError(
            f"{out} is a file, not a folder; point data.root (--data, --out) at a folder", out
        )
    if not out.is_dir() or not any(out.iterdir()):
        return None
    card = _read_card(out / "dataset_card.json")
    if card is not None:
        diffs = _differences(card, cfg)
        if diffs:
            raise DataFolderError(_other_settings_message(out, card, diffs), out, diffs)
        return None if card.get("complete") is False else card
    from .datasets import detect_layout  # the loaders' layouts (imports torch: only on this path)

    foreign = (
        "" if not (out / "dataset_card.json").exists() else " (its dataset_card.json is not the generator's)"
    )
    layout = detect_layout(out)
    if layout == "voc":
        raise DataFolderError(
            f"{out} looks like a PASCAL VOC data set (JPEGImages/ with SegmentationClass/ or ImageSets/) and "
            f"has no card of the synthetic generator{foreign}, but the config asks for the synthetic benchmark "
            f"(data.kind: synth). To train on it: --config configs/voc.yaml --data {out}. {_OTHER_DATA}",
            out,
        )
    if layout == "coco":
        raise DataFolderError(
            f"{out} looks like an MS COCO data set (train2014/ or val2014/) and has no card of the synthetic "
            f"generator{foreign}, but the config asks for the synthetic benchmark (data.kind: synth). To train "
            f"on it: --config configs/coco.yaml --data {out}. {_OTHER_DATA}",
            out,
        )
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
    shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)" if len(entries) > 5 else "")
    raise DataFolderError(
        f"{out} is not empty ({shown}) and has no card of the synthetic generator{foreign}: it is not a "
        f"data set this library generated. {_OTHER_DATA}",
        out,
    )
