"""The embedded synthetic WSSS benchmark: a generator that builds CPMC's two failures into its data.

PASCAL VOC cannot be downloaded everywhere, so the book's default dataset is drawn here and
written to disk in the VOC layout, where the same loader that reads a real VOCdevkit reads it::

    <out>/JPEGImages/<name>.jpg               RGB image (JPEG quality 95)
    <out>/SegmentationClass/<name>.png        VOC palette PNG: 0 background, 1..K-1 classes, 255 ignore
    <out>/ImageSets/Segmentation/train.txt    one image name per line (and val.txt)
    <out>/cls_labels.json                     {name: [class ids 1..K-1]}, the image-level labels
    <out>/Diagnostics/<name>.png              what every pixel is, by design (codes below)
    <out>/dataset_card.json                   every parameter, class names and design, pixel shares

Names are ``<split>_<index>`` (``train_00000``). ``K`` counts background: ``classes`` foreground
classes give ``K = classes + 1``.

**What an object is.** Classes come in *groups* of about three. Every object of a group has the
same *body*: a shape family (ellipse, box, diamond, triangle, hexagon, cross, flower), a texture
(dots, checks, waves, hatch, rings, grain) and a muted colour. Inside the body sits a smaller
*discriminative part* (``part_frac`` of the body's area, 0.2 by default): a saturated colour and a
shape (disc, square, triangle) that no other class shares. The part alone tells the classes of a
group apart, so a classifier learns the part and its CAM misses the body: **false negatives
(incomplete activation), by design**. A fraction ``atypical_prob`` of objects wear their group's
*atypical body* (another colour and texture, same shape family): a single global prototype of the
class misses it, while the classifier CAM (through the part) and an affinity can still reach it.
That is the failure CPMC's false-negative local prototypes are for.

**What the background is.** Each class has a *context texture*: stripes of a class-specific
orientation and tint. With probability ``context_prob`` an object is drawn in front of a disc of
its class's context, smaller than the object, peeking out from behind it. A classifier learns that
context too and its CAM fires on background: **false positives (background noise), by design**.
Two elements keep the context correlated with its class but not sufficient, as real context is:
in ``absent_context_prob`` of images a context disc of a class *absent* from the image, and in
``distractor_prob`` of images one or two part-less *distractor* blobs with a group's body. A
prototype CAM, which matches body features, fires on distractors; a classifier CAM does not. The
rest of the background is neutral: smooth low-contrast colour variation plus grain.

**Scene.** 1 to ``max_objects`` objects per image, of varied scale, aspect, rotation and
position; a second object is often of the same group (co-occurrence). Later objects are drawn over
earlier ones and the masks show what is visible, but a pose that would hide more than half of an
earlier object's part, or more than 60 % of its area, is redrawn (after 20 failed tries the new
object is left out): every object in the mask keeps a visible part. The image-level label is therefore simply the set of classes in the mask. VOC's
thin ignore band is drawn along every object border (one pixel on each side, value 255).

**Diagnostic codes** (``Diagnostics/<name>.png``, also listed in the card)::

    0    neutral background
    1    object body (the group's usual body)
    2    discriminative part
    3    context background of a class present in the image
    4    context background of a class absent from the image
    5    distractor (a body without a part; background in the mask)
    6    atypical object body (the group's other body)
    255  border band (ignore in the mask too)

Codes 1, 2, 6 are exactly the object pixels of the mask; 0, 3, 4, 5 are its background.

**Class names** describe the part, which alone identifies the class: ``"red-disc"``,
``"cyan-triangle"``; index 0 is ``"background"``. The card lists each class's full design.

Every image draws from its own ``numpy.random.Generator`` seeded by (seed, split, index), so an
image does not depend on generation order and the same config gives byte-identical files.

**Whose folder.** The generator writes only into a missing or empty folder, or one whose
``dataset_card.json`` it wrote itself with the same settings (:func:`check_folder`). Anything else
(a PASCAL VOC or COCO folder, a synthetic set of other settings, any other non-empty folder) is a
:class:`DataFolderError` that names the folder, the reason and the fix, and nothing is written. The
card is written first, marked ``"complete": false``, and rewritten last with ``"complete": true``,
so an interrupted generation is recognised as the generator's own and finished by the next call.

Example:
    >>> from cpmc_lib.config import SynthConfig
    >>> card = ensure_generated(SynthConfig(train=8, val=4, size=64), "data/tiny")  # doctest: +SKIP
    >>> card["class_names"][:3]  # doctest: +SKIP
    ['background', 'red-disc', 'green-square']
"""

from __future__ import annotations

import argparse
import dataclasses
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .config import SynthConfig
from .io import IGNORE_INDEX, atomic_write, load_json, save_json, save_mask_png
from .progress import tqdm
from .synth_design import (
    ATYPICAL,
    ATYPICAL_COLOURS,
    BODY,
    BODY_COLOURS,
    BODY_SHAPES,
    BODY_TEXTURES,
    BORDER,
    CONTEXT_ABSENT,
    CONTEXT_PRESENT,
    CONTEXT_TINTS,
    DISTRACTOR,
    NEUTRAL,
    PART,
    PART_COLOURS,
    PART_SHAPES,
    ClassDesign,
    class_designs,
)
from .synth_draw import (
    Pose,
    body_texture,
    draw_body,
    draw_part,
    neutral_background,
    paint_context,
    part_region,
    render_image,
    shape_mask,
)
from .synth_folder import _GENERATOR, GENERATOR_VERSION, DataFolderError, check_folder

# The design and drawing live in synth_design and synth_draw, the folder check in synth_folder;
# their public names are re-exported here, so ``synth.X`` reaches all of them.
__all__ = [
    "ATYPICAL",
    "BODY",
    "BORDER",
    "CONTEXT_ABSENT",
    "CONTEXT_PRESENT",
    "DIAGNOSTIC_CODES",
    "DISTRACTOR",
    "GENERATOR_VERSION",
    "MAX_CLASSES",
    "NEUTRAL",
    "PART",
    "ClassDesign",
    "DataFolderError",
    "Pose",
    "add_synth_arguments",
    "body_texture",
    "check_config",
    "check_folder",
    "class_designs",
    "config_from_args",
    "draw_body",
    "draw_part",
    "ensure_generated",
    "design_table",
    "record_calibration",
    "generate",
    "neutral_background",
    "paint_context",
    "part_region",
    "render_image",
    "shape_mask",
    "ATYPICAL_COLOURS",
    "BODY_COLOURS",
    "BODY_SHAPES",
    "BODY_TEXTURES",
    "CONTEXT_TINTS",
    "PART_COLOURS",
    "PART_SHAPES",
]

MAX_CLASSES = 20
SPLITS = ("train", "val")

DIAGNOSTIC_CODES = {
    NEUTRAL: "neutral background",
    BODY: "object body",
    PART: "discriminative part",
    CONTEXT_PRESENT: "context background of a present class",
    CONTEXT_ABSENT: "context background of an absent class",
    DISTRACTOR: "distractor (body without part)",
    ATYPICAL: "atypical object body",
    BORDER: "border band (ignore)",
}
_SHARE_KEYS = {
    NEUTRAL: "neutral",
    BODY: "body",
    PART: "part",
    CONTEXT_PRESENT: "context_present",
    CONTEXT_ABSENT: "context_absent",
    DISTRACTOR: "distractor",
    ATYPICAL: "atypical_body",
    BORDER: "border",
}


def check_config(cfg: SynthConfig) -> None:
    """Raise ``ValueError`` naming the first generator parameter out of its valid range."""
    if not 2 <= cfg.classes <= MAX_CLASSES:
        raise ValueError(f"synth.classes must be between 2 and {MAX_CLASSES} (VOC has 20), got {cfg.classes}")
    if cfg.size < 32:
        raise ValueError(f"synth.size must be at least 32 px, got {cfg.size}")
    if cfg.train < 0 or cfg.val < 0:
        raise ValueError(f"synth.train and synth.val must be >= 0, got {cfg.train} and {cfg.val}")
    if not 0.02 <= cfg.part_frac <= 0.6:
        raise ValueError(f"synth.part_frac must be in [0.02, 0.6], got {cfg.part_frac}")
    if cfg.max_objects < 1:
        raise ValueError(f"synth.max_objects must be >= 1, got {cfg.max_objects}")
    for key in ("context_prob", "absent_context_prob", "distractor_prob", "atypical_prob"):
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            raise ValueError(f"synth.{key} must be in [0, 1], got {getattr(cfg, key)}")


# ---------------------------------------------------------------- the dataset on disk


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), index])


def _save_jpeg(path: Path, img: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(img, mode="RGB").save(buf, format="JPEG", quality=95)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def _names(cfg: SynthConfig) -> dict[str, list[str]]:
    return {split: [f"{split}_{i:05d}" for i in range(getattr(cfg, split))] for split in SPLITS}


def _write_image(cfg: SynthConfig, designs: list[ClassDesign], out: Path, split: str, index: int, name: str):
    """Render image ``index`` of ``split`` and write its three files; return (keys, code counts)."""
    img, mask, diag = render_image(cfg, designs, _image_rng(cfg.seed, split, index))
    _save_jpeg(out / "JPEGImages" / f"{name}.jpg", img)
    save_mask_png(out / "SegmentationClass" / f"{name}.png", mask)
    save_mask_png(out / "Diagnostics" / f"{name}.png", diag)
    keys = sorted(int(k) for k in np.unique(mask) if 0 < k < IGNORE_INDEX)
    return keys, np.bincount(diag.ravel(), minlength=256)


def generate(cfg: SynthConfig, out: str | Path, progress: bool = True, workers: int = 4) -> dict[str, Any]:
    """Draw the whole benchmark into ``out`` (VOC layout) and return its dataset card.

    ``out`` must be missing, empty, or this generator's folder with the same settings (see
    :func:`check_folder`; anything else raises :class:`DataFolderError` and nothing is written).
    Images are drawn by ``workers`` threads: each file write waits on the disk (``fsync``), and
    threads overlap those waits with drawing. Every image has its own seed, so the files do not
    depend on ``workers``. The card is written first with ``"complete": false`` and last with
    ``"complete": true``, so an interrupted generation is never taken for a finished one, and is
    still known as the generator's own.
    """
    check_config(cfg)
    check_folder(cfg, out)
    out = Path(out)
    designs = class_designs(cfg.classes)
    names = _names(cfg)
    save_json(out / "dataset_card.json", _started_card(cfg, designs))
    counts = {split: np.zeros(256, np.int64) for split in SPLITS}
    labels: dict[str, list[int]] = {}
    jobs = [(split, i, name) for split in SPLITS for i, name in enumerate(names[split])]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(lambda job: _write_image(cfg, designs, out, *job), jobs)
        for (split, _, name), (keys, hist) in zip(
            jobs, tqdm(results, total=len(jobs), desc="synth", disable=not progress, unit="img"), strict=True
        ):
            labels[name] = keys
            counts[split] += hist
    for split in SPLITS:
        with atomic_write(out / "ImageSets" / "Segmentation" / f"{split}.txt", "w") as f:
            f.write("".join(f"{n}\n" for n in names[split]))
    save_json(out / "cls_labels.json", labels)
    card = _card(cfg, designs, counts, labels)
    save_json(out / "dataset_card.json", card)
    return card


def _shares(counts: np.ndarray) -> dict[str, float]:
    total = max(int(counts.sum()), 1)
    shares = {key: round(float(counts[code]) / total, 4) for code, key in _SHARE_KEYS.items()}
    obj = counts[BODY] + counts[PART] + counts[ATYPICAL]
    shares["object"] = round(float(obj) / total, 4)
    shares["part_of_object"] = round(float(counts[PART]) / max(int(obj), 1), 4)
    return shares


def _json_design(design: ClassDesign) -> dict[str, Any]:
    """A design as JSON gives it back (colour tuples as lists), so a loaded card equals a fresh one."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(design).items()}


def _card(
    cfg: SynthConfig, designs: list[ClassDesign], counts: dict[str, np.ndarray], labels: dict[str, list[int]]
) -> dict[str, Any]:
    per_class = np.bincount([k for keys in labels.values() for k in keys], minlength=cfg.classes + 1)
    started = {k: v for k, v in _started_card(cfg, designs).items() if k != "complete"}
    return {
        **started,
        "classes": [_json_design(d) for d in designs],
        "diagnostic_codes": {str(code): text for code, text in DIAGNOSTIC_CODES.items()},
        "splits": {split: getattr(cfg, split) for split in SPLITS},
        "pixel_shares": {
            "all": _shares(counts["train"] + counts["val"]),
            **{split: _shares(counts[split]) for split in SPLITS},
        },
        "labels_per_image": round(float(np.mean([len(k) for k in labels.values()])), 4) if labels else 0.0,
        "images_per_class": {d.name: int(per_class[d.id]) for d in designs},
        "calibration": {},
        "complete": True,
    }


def _started_card(cfg: SynthConfig, designs: list[ClassDesign]) -> dict[str, Any]:
    """The card written before any image: whose folder this is, with which settings, unfinished."""
    return {
        "generator": _GENERATOR,
        "version": GENERATOR_VERSION,
        "params": dataclasses.asdict(cfg),
        "num_classes": cfg.classes + 1,
        "class_names": ["background"] + [d.name for d in designs],
        "complete": False,
    }


def ensure_generated(
    cfg: SynthConfig, out: str | Path, progress: bool = True, workers: int = 4
) -> dict[str, Any]:
    """Return the card of ``out`` if the generator finished it with ``cfg``, else generate into it.

    Generates only into a missing or empty folder, or finishes an interrupted generation with the
    same settings; any other folder raises :class:`DataFolderError` (see :func:`check_folder`) and
    is left untouched, never regenerated.
    """
    check_config(cfg)
    card = check_folder(cfg, out)
    if card is not None:
        return card
    return generate(cfg, out, progress=progress, workers=workers)


# ---------------------------------------------------------------- command line

_HELP = {
    "classes": "foreground classes (2-20); K = classes + 1 with background",
    "size": "image side in pixels",
    "train": "training images",
    "val": "validation images",
    "seed": "generator seed; the same config gives byte-identical files",
    "part_frac": "discriminative part's share of the object area",
    "context_prob": "probability of a class-context disc behind each object",
    "max_objects": "at most this many objects per image (at least 1)",
    "absent_context_prob": "per-image probability of a context disc of an absent class",
    "distractor_prob": "per-image probability of 1-2 part-less distractor bodies",
    "atypical_prob": "per-object probability of the group's atypical body",
}


def add_synth_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add one ``--flag`` per :class:`SynthConfig` field, defaults from the dataclass."""
    for f in dataclasses.fields(SynthConfig):
        default = f.default
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=_HELP.get(f.name)
            )
        else:
            parser.add_argument(
                flag,
                type=type(default),
                default=default,
                help=f"{_HELP.get(f.name, f.name)} (default {default})",
            )
    return parser


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    """The :class:`SynthConfig` of parsed ``args`` (from :func:`add_synth_arguments`), checked."""
    cfg = SynthConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SynthConfig)})
    check_config(cfg)
    return cfg


def design_table(card: dict[str, Any]) -> str:
    """The card's class designs as a Markdown table (for the dataset chapter)."""
    rows = [
        "| id | class (part) | group | body | atypical body | context stripes |",
        "|---|---|---|---|---|---|",
    ]
    for c in card["classes"]:
        rows.append(
            f"| {c['id']} | {c['name']} | {c['group']} | {c['body_shape']}, {c['body_texture']}, "
            f"rgb{tuple(c['body_colour'])} | {c['atypical_texture']}, rgb{tuple(c['atypical_colour'])} "
            f"| {c['context_angle']}°, rgb{tuple(c['context_tint'])} |"
        )
    return "\n".join(rows)


def record_calibration(out: str | Path, calibration: dict[str, Any]) -> dict[str, Any]:
    """Write classifier measurements of the pathologies into the card's ``calibration`` field.

    The generator leaves the field empty; chapter 3 (or :func:`cpmc_lib.card.benchmark_calibration`)
    fills it with what a trained classifier measured on this very data. Other card fields and the
    reuse check of :func:`ensure_generated` are unaffected.
    """
    path = Path(out) / "dataset_card.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; generate the data first (python -m cpmc_lib synth --out {out})"
        )
    card = load_json(path)
    card["calibration"] = calibration
    save_json(path, card)
    return card
