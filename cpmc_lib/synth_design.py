"""The synthetic benchmark's design: the diagnostic codes and what each class looks like.

The per-pixel diagnostic codes (named in :data:`cpmc_lib.synth.DIAGNOSTIC_CODES`), the design tables
(part colours and shapes; body shapes, textures and colours; atypical colours; context tints and
stripe orientations) and :func:`class_designs`, which deals the tables out to the classes as
:class:`ClassDesign`. :mod:`cpmc_lib.synth` explains the design and writes the benchmark;
:mod:`cpmc_lib.synth_draw` draws it. :mod:`cpmc_lib.synth` re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass

from .io import IGNORE_INDEX

__all__ = [
    "ATYPICAL",
    "ATYPICAL_COLOURS",
    "BODY",
    "BODY_COLOURS",
    "BODY_SHAPES",
    "BODY_TEXTURES",
    "BORDER",
    "CONTEXT_ABSENT",
    "CONTEXT_ANGLES",
    "CONTEXT_PERIOD",
    "CONTEXT_PRESENT",
    "CONTEXT_TINTS",
    "DISTRACTOR",
    "GROUP_SIZE",
    "NEUTRAL",
    "PART",
    "PART_COLOURS",
    "PART_SHAPES",
    "ClassDesign",
    "class_designs",
]

# The diagnostic codes of ``Diagnostics/<name>.png`` (see the docstring of :mod:`cpmc_lib.synth`).
NEUTRAL, BODY, PART, CONTEXT_PRESENT, CONTEXT_ABSENT, DISTRACTOR, ATYPICAL = range(7)
BORDER = IGNORE_INDEX

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
