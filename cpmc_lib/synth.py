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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .config import SynthConfig
from .io import IGNORE_INDEX, atomic_write, load_json, save_json, save_mask_png
from .progress import tqdm

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
]

GENERATOR_VERSION = "cpmc-synth-1"
_GENERATOR = "cpmc_lib.synth"  # the card's "generator": whose folder it is
MAX_CLASSES = 20
SPLITS = ("train", "val")

NEUTRAL, BODY, PART, CONTEXT_PRESENT, CONTEXT_ABSENT, DISTRACTOR, ATYPICAL = range(7)
BORDER = IGNORE_INDEX
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

# The design tables. Part colours are saturated, body colours muted and context tints pale, so the
# three roles never share a colour.
PART_COLOURS = {
    "red": (230, 30, 30),
    "green": (30, 190, 50),
    "blue": (40, 70, 235),
    "yellow": (245, 220, 30),
    "magenta": (225, 40, 205),
    "cyan": (30, 215, 225),
    "orange": (250, 140, 20),
    "violet": (135, 40, 190),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
PART_SHAPES = ("disc", "square", "triangle")
BODY_SHAPES = ("ellipse", "box", "diamond", "triangle", "hexagon", "cross", "flower")
BODY_TEXTURES = ("dots", "checks", "waves", "hatch", "rings", "grain")
BODY_COLOURS = (
    (125, 85, 55),
    (110, 115, 50),
    (70, 90, 120),
    (50, 115, 100),
    (115, 65, 95),
    (150, 95, 60),
    (80, 115, 65),
)
ATYPICAL_COLOURS = (
    (160, 160, 168),
    (95, 75, 125),
    (150, 125, 60),
    (60, 60, 62),
    (155, 105, 115),
    (90, 125, 145),
    (135, 145, 105),
)
CONTEXT_TINTS = ((215, 185, 130), (130, 175, 215), (175, 210, 145), (215, 150, 175), (170, 160, 215))
CONTEXT_ANGLES = (0, 45, 90, 135)
CONTEXT_PERIOD = 6.0  # px: stripes a few pixels wide survive JPEG and output stride 8

GROUP_SIZE = 3
OBJECT_SCALE = (0.18, 0.30)  # major semi-axis, as a fraction of the image size
OBJECT_ASPECT = (0.55, 1.0)  # minor / major semi-axis
SAME_GROUP_PROB = 0.35  # a further object comes from the first object's group (co-occurrence)
MAX_PART_HIDDEN = 0.5  # a later object may hide at most this share of an earlier part
MAX_AREA_HIDDEN = 0.6  # ... and of an earlier object's area
MIN_PART_INSIDE = 0.8  # share of the part's nominal area that must lie inside body and frame
POSE_TRIES = 20


@dataclass(frozen=True)
class ClassDesign:
    """How foreground class ``id`` (1..K-1) looks: its group's bodies, its part and its context."""

    id: int
    name: str
    group: int
    body_shape: str
    body_texture: str
    body_colour: tuple[int, int, int]
    atypical_texture: str
    atypical_colour: tuple[int, int, int]
    part_shape: str
    part_colour: tuple[int, int, int]
    context_angle: int
    context_tint: tuple[int, int, int]


@dataclass(frozen=True)
class Pose:
    """Placement of a shape: centre (px), semi-axes (px) and rotation (radians)."""

    cx: float
    cy: float
    a: float
    b: float
    theta: float


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


def class_designs(classes: int) -> list[ClassDesign]:
    """The fixed design of ``classes`` foreground classes (ids 1..classes).

    Class ``i`` (0-based) joins group ``i % G`` with ``G = ceil(classes / 3)``. Its part colour is
    ``i % 10`` and its part shape ``(i + i // 10) % 3``, a pair no other class has; its context is
    tint ``i % 5`` with orientation ``i % 4``, also unique for up to 20 classes.
    """
    groups = -(-classes // GROUP_SIZE)
    colour_names = list(PART_COLOURS)
    designs = []
    for i in range(classes):
        g = i % groups
        colour = colour_names[i % len(colour_names)]
        shape = PART_SHAPES[(i + i // len(colour_names)) % len(PART_SHAPES)]
        designs.append(
            ClassDesign(
                id=i + 1,
                name=f"{colour}-{shape}",
                group=g,
                body_shape=BODY_SHAPES[g % len(BODY_SHAPES)],
                body_texture=BODY_TEXTURES[g % len(BODY_TEXTURES)],
                body_colour=BODY_COLOURS[g % len(BODY_COLOURS)],
                atypical_texture=BODY_TEXTURES[(g + 3) % len(BODY_TEXTURES)],
                atypical_colour=ATYPICAL_COLOURS[g % len(ATYPICAL_COLOURS)],
                part_shape=shape,
                part_colour=PART_COLOURS[colour],
                context_angle=CONTEXT_ANGLES[i % len(CONTEXT_ANGLES)],
                context_tint=CONTEXT_TINTS[i % len(CONTEXT_TINTS)],
            )
        )
    return designs


# ---------------------------------------------------------------- drawing: pure functions on arrays


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)``, each (H, W) float32."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return x, y


def _local(pose: Pose, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in the shape's rotated frame, in px (not yet divided by the semi-axes)."""
    c, s = np.cos(pose.theta), np.sin(pose.theta)
    dx, dy = x - pose.cx, y - pose.cy
    return dx * c + dy * s, -dx * s + dy * c


def _regular_polygon(u: np.ndarray, v: np.ndarray, sides: int) -> np.ndarray:
    """Inside test of a regular polygon inscribed in the unit circle, one vertex pointing up."""
    inside = np.ones(u.shape, dtype=bool)
    apothem = np.cos(np.pi / sides)
    for j in range(sides):
        ang = np.pi / 2 + (2 * j + 1) * np.pi / sides  # edge normals sit between the vertices
        inside &= u * np.cos(ang) + v * np.sin(ang) <= apothem
    return inside


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test of a unit shape in normalised local coordinates ``(u, v)``; (H, W) bool."""
    if shape in ("ellipse", "disc"):
        return u * u + v * v <= 1.0
    if shape in ("box", "square"):
        return (np.abs(u) <= 0.9) & (np.abs(v) <= 0.9)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "triangle":
        return _regular_polygon(u, v, 3)
    if shape == "hexagon":
        return _regular_polygon(u, v, 6)
    if shape == "cross":
        return ((np.abs(u) <= 0.42) & (np.abs(v) <= 1.0)) | ((np.abs(u) <= 1.0) & (np.abs(v) <= 0.42))
    if shape == "flower":
        r = np.sqrt(u * u + v * v)
        return r <= 0.8 + 0.2 * np.cos(5 * np.arctan2(v, u))
    raise ValueError(f"unknown shape {shape!r}")


def _unit_area(shape: str) -> float:
    """Area of the unit shape of :func:`shape_mask` (to size parts by area)."""
    return {"disc": np.pi, "square": 3.24, "triangle": 3 * np.sqrt(3) / 4}[shape]


def body_texture(texture: str, xr: np.ndarray, yr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two-tone pattern in [0, 1] at local pixel coordinates ``(xr, yr)`` (arrays of any one shape)."""
    if texture == "dots":
        p = 7.0
        return (((xr % p) - p / 2) ** 2 + ((yr % p) - p / 2) ** 2 < 5.0).astype(np.float32)
    if texture == "checks":
        return ((np.floor(xr / 5) + np.floor(yr / 5)) % 2).astype(np.float32)
    if texture == "waves":
        return (np.sin(2 * np.pi * xr / 8 + 2.0 * np.sin(2 * np.pi * yr / 16)) > 0).astype(np.float32)
    if texture == "hatch":
        return ((np.abs(np.sin(np.pi * xr / 6)) < 0.35) | (np.abs(np.sin(np.pi * yr / 6)) < 0.35)).astype(
            np.float32
        )
    if texture == "rings":
        return (np.sin(2 * np.pi * np.sqrt(xr * xr + yr * yr) / 7) > 0).astype(np.float32)
    if texture == "grain":
        # random 2x2-pixel cells of a 32x32 tile: fine speckle that no regular pattern matches
        tile = rng.random((32, 32)) > 0.5
        return tile[(np.floor(yr / 2) % 32).astype(int), (np.floor(xr / 2) % 32).astype(int)].astype(
            np.float32
        )
    raise ValueError(f"unknown texture {texture!r}")


def neutral_background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A low-contrast background: muted base colour, smooth blotches and grain; (H, W, 3) float32."""
    base = rng.uniform(95, 165) + rng.uniform(-18, 18, size=3)
    cells = rng.integers(3, 7)
    blotch = np.clip(rng.normal(128, 12, size=(cells, cells, 3)), 0, 255).astype(np.uint8)
    # bilinear upsampling of a coarse random grid gives smooth variation at no cost
    smooth = (
        np.asarray(Image.fromarray(blotch, mode="RGB").resize((size, size), Image.BILINEAR), np.float32) - 128
    )
    grain = 5 * rng.standard_normal((size, size, 1), dtype=np.float32)
    return (base + smooth + grain).astype(np.float32)


def paint_context(
    img: np.ndarray, region: np.ndarray, design: ClassDesign, x: np.ndarray, y: np.ndarray
) -> None:
    """Paint ``design``'s context stripes over ``region`` of ``img`` (H, W, 3), in place.

    The stripes follow image axes, not the object, so the orientation is a property of the class.
    """
    ang = np.deg2rad(design.context_angle)
    phase = (x[region] * np.cos(ang) + y[region] * np.sin(ang)) / CONTEXT_PERIOD
    stripes = (np.sin(2 * np.pi * phase) > 0).astype(np.float32)
    img[region] = np.asarray(design.context_tint, np.float32) * (0.55 + 0.45 * stripes[:, None])


def draw_body(
    img: np.ndarray,
    shape: str,
    texture: str,
    colour: tuple[int, int, int],
    pose: Pose,
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw a textured body in place on ``img`` (H, W, 3); return its (H, W) bool mask."""
    xr, yr = _local(pose, x, y)
    region = shape_mask(shape, xr / pose.a, yr / pose.b)
    pattern = body_texture(texture, xr[region], yr[region], rng)
    img[region] = np.asarray(colour, np.float32) * (0.65 + 0.55 * pattern[:, None])
    return region


def part_region(
    shape: str, body: np.ndarray, xr: np.ndarray, yr: np.ndarray, part_frac: float, rng: np.random.Generator
) -> np.ndarray:
    """Where an object's part goes: a ``shape`` of ``part_frac`` times the body's area, inside the body.

    ``xr, yr`` are the body's local coordinates (:func:`_local`), so the part turns with the body.
    Centres are tried at random body pixels and the one that keeps most of the part inside the
    body wins. Returns an (H, W) bool mask (empty if the body is).
    """
    ys, xs = np.nonzero(body)
    if len(xs) == 0:
        return body
    nominal = part_frac * len(xs)
    radius = np.sqrt(nominal / _unit_area(shape))
    best, best_inside = body & False, -1.0
    for j in rng.choice(len(xs), size=min(8, len(xs)), replace=False):
        # the frame is rotated, not scaled: shifting it to a body pixel centres the part there
        u, v = xr - xr[ys[j], xs[j]], yr - yr[ys[j], xs[j]]
        region = shape_mask(shape, u / radius, v / radius) & body
        inside = region.sum() / nominal
        if inside > best_inside:
            best, best_inside = region, inside
        if inside >= 0.97:
            break
    return best


def draw_part(img: np.ndarray, region: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Paint the discriminative part (flat saturated colour) over ``region`` of ``img``, in place."""
    img[region] = np.asarray(colour, np.float32)


def _border_band(mask: np.ndarray) -> np.ndarray:
    """Pixels with a differently labelled 8-neighbour: VOC's ignore band, one pixel each side."""
    p = np.pad(mask, 1, mode="edge")
    band = np.zeros(mask.shape, dtype=bool)
    h, w = mask.shape
    for dy in range(3):
        for dx in range(3):
            band |= p[dy : dy + h, dx : dx + w] != mask
    return band


# ---------------------------------------------------------------- one scene


@dataclass(eq=False)
class _Object:
    design: ClassDesign
    pose: Pose
    atypical: bool
    body: np.ndarray  # (H, W) bool, full extent before later objects
    part: np.ndarray  # (H, W) bool


def _random_pose(size: int, rng: np.random.Generator, scale: float = 1.0) -> Pose:
    a = rng.uniform(*OBJECT_SCALE) * size * scale
    return Pose(
        cx=rng.uniform(0.15, 0.85) * size,
        cy=rng.uniform(0.15, 0.85) * size,
        a=a,
        b=a * rng.uniform(*OBJECT_ASPECT),
        theta=rng.uniform(0, np.pi),
    )


def _place_objects(
    cfg: SynthConfig, designs: list[ClassDesign], x: np.ndarray, y: np.ndarray, rng: np.random.Generator
) -> list[_Object]:
    """Choose classes and poses; redraw poses that would hide too much of an earlier object."""
    n = int(rng.integers(1, cfg.max_objects + 1))
    placed: list[_Object] = []
    for _ in range(n):
        if placed and rng.random() < SAME_GROUP_PROB:
            g = placed[0].design.group
            design = designs[int(rng.choice([d.id - 1 for d in designs if d.group == g]))]
        else:
            design = designs[int(rng.integers(len(designs)))]
        atypical = bool(rng.random() < cfg.atypical_prob)
        for _try in range(POSE_TRIES):
            pose = _random_pose(cfg.size, rng)
            xr, yr = _local(pose, x, y)
            body = shape_mask(design.body_shape, xr / pose.a, yr / pose.b)
            part = part_region(design.part_shape, body, xr, yr, cfg.part_frac, rng)
            if part.sum() < MIN_PART_INSIDE * cfg.part_frac * body.sum() or body.sum() == 0:
                continue
            if all(_still_visible(j, body, placed) for j in range(len(placed))):
                placed.append(_Object(design, pose, atypical, body, part))
                break
    return placed


def _still_visible(j: int, cover: np.ndarray, placed: list[_Object]) -> bool:
    """Would ``placed[j]`` keep enough part and area if ``cover`` were drawn over all objects?"""
    obj, later = placed[j], cover.copy()
    for o in placed[j + 1 :]:
        later |= o.body
    part_left = (obj.part & ~later).sum() / obj.part.sum()
    area_left = (obj.body & ~later).sum() / obj.body.sum()
    return part_left >= 1 - MAX_PART_HIDDEN and area_left >= 1 - MAX_AREA_HIDDEN


def render_image(
    cfg: SynthConfig, designs: list[ClassDesign], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one scene.

    Returns:
        ``img`` (H, W, 3) uint8 RGB, ``mask`` (H, W) uint8 with 0..K-1 and 255, and ``diag``
        (H, W) uint8 with the diagnostic codes of the module docstring.
    """
    size = cfg.size
    x, y = _grid(size)
    objects = _place_objects(cfg, designs, x, y, rng)
    img = neutral_background(size, rng)
    mask = np.zeros((size, size), np.uint8)
    diag = np.full((size, size), NEUTRAL, np.uint8)

    # context discs, smaller than the object, peeking out from behind it
    for o in objects:
        if rng.random() < cfg.context_prob:
            r = np.sqrt(o.pose.a * o.pose.b) * rng.uniform(0.85, 1.15)
            ang, dist = rng.uniform(0, 2 * np.pi), o.pose.a * rng.uniform(0.8, 1.2)
            disc = (x - o.pose.cx - dist * np.cos(ang)) ** 2 + (
                y - o.pose.cy - dist * np.sin(ang)
            ) ** 2 <= r * r
            paint_context(img, disc, o.design, x, y)
            diag[disc] = CONTEXT_PRESENT
    present = {o.design.id for o in objects}
    absent = [d for d in designs if d.id not in present]
    if absent and rng.random() < cfg.absent_context_prob:
        design = absent[int(rng.integers(len(absent)))]
        pose = _random_pose(size, rng)
        r = np.sqrt(pose.a * pose.b) * rng.uniform(0.85, 1.15)
        disc = (x - pose.cx) ** 2 + (y - pose.cy) ** 2 <= r * r
        paint_context(img, disc, design, x, y)
        diag[disc] = CONTEXT_ABSENT

    # distractors: a group's usual body without any part, under the objects
    if rng.random() < cfg.distractor_prob:
        for _ in range(int(rng.integers(1, 3))):
            design = designs[int(rng.integers(len(designs)))]
            pose = _random_pose(size, rng, scale=rng.uniform(0.6, 0.9))
            blob = draw_body(img, design.body_shape, design.body_texture, design.body_colour, pose, x, y, rng)
            diag[blob] = DISTRACTOR

    for o in objects:
        texture = o.design.atypical_texture if o.atypical else o.design.body_texture
        colour = o.design.atypical_colour if o.atypical else o.design.body_colour
        draw_body(img, o.design.body_shape, texture, colour, o.pose, x, y, rng)
        draw_part(img, o.part, o.design.part_colour)
        mask[o.body] = o.design.id
        diag[o.body] = ATYPICAL if o.atypical else BODY
        diag[o.part] = PART

    band = _border_band(mask)
    mask[band] = IGNORE_INDEX
    diag[band] = BORDER
    img += 3 * rng.standard_normal(img.shape, dtype=np.float32)  # sensor noise over everything
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask, diag


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


# ---------------------------------------------------------------- whose folder


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
