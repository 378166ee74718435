"""Drawing one scene of the synthetic benchmark: pure functions on numpy arrays.

Shapes, body textures, the neutral background, context stripes, bodies and parts, the placement of
the objects, and :func:`render_image`, which draws one image with its mask and diagnostic codes
from a :class:`~cpmc_lib.config.SynthConfig`, the class designs of :mod:`cpmc_lib.synth_design`
and a random generator. Nothing here touches the disk: :mod:`cpmc_lib.synth` writes the
benchmark and re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .config import SynthConfig
from .io import IGNORE_INDEX
from .synth_design import (
    ATYPICAL,
    BODY,
    BORDER,
    CONTEXT_ABSENT,
    CONTEXT_PERIOD,
    CONTEXT_PRESENT,
    DISTRACTOR,
    NEUTRAL,
    PART,
    ClassDesign,
)

__all__ = [
    "Pose",
    "body_texture",
    "draw_body",
    "draw_part",
    "neutral_background",
    "paint_context",
    "part_region",
    "render_image",
    "shape_mask",
]

OBJECT_SCALE = (0.18, 0.30)  # major semi-axis, as a fraction of the image size
OBJECT_ASPECT = (0.55, 1.0)  # minor / major semi-axis
SAME_GROUP_PROB = 0.35  # a further object comes from the first object's group (co-occurrence)
MAX_PART_HIDDEN = 0.5  # a later object may hide at most this share of an earlier part
MAX_AREA_HIDDEN = 0.6  # ... and of an earlier object's area
MIN_PART_INSIDE = 0.8  # share of the part's nominal area that must lie inside body and frame
POSE_TRIES = 20


@dataclass(frozen=True)
class Pose:
    """Placement of a shape: centre (px), semi-axes (px) and rotation (radians)."""

    cx: float
    cy: float
    a: float
    b: float
    theta: float


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
        (H, W) uint8 with the diagnostic codes of :mod:`cpmc_lib.synth`'s docstring.
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
