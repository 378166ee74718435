"""The book's drawn diagrams: the default pipeline coloured by origin, and the calibration regions
on a toy image. Both are drawn from the library's declarations and functions at every book build
(:func:`cpmc_lib.book.build.write_figures`), so they cannot drift from the code."""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

from .components import ORIGIN_NAMES
from .plots import COLUMN_IN, TICK_PT, plot_image_grid

__all__ = ["PIPELINE_ROWS", "plot_calibration_regions", "plot_pipeline", "toy_labels"]


# The default pipeline in reading order, one row per line of the diagram: component names of
# cpmc_lib.components.COMPONENTS (their origin colours the box), or (name, origin) for the steps
# that the components table does not list.
PIPELINE_ROWS: tuple[tuple, ...] = (
    ("stand-in pretraining", "classifier CAM", "context refinement", "prototype CAM"),
    ("FN and FP local prototypes", "guards against false positives", "background decision without ground truth",
     "ignore zone around the plane"),
    ("part-anchored class assignment", "negative prototypes in the labels", "dense CRF on the pseudo labels",
     ("segmentation network", "paper"), "test-time dense CRF"),
)  # fmt: skip
ORIGIN_COLORS = {"paper": "#1f5fa8", "reconstruction": "#7b4fa6", "lineage": "#2e8540", "field": "#6b6b6b",
                 "book": "#c4580e"}  # fmt: skip


def plot_pipeline(rows: Sequence[Sequence] = PIPELINE_ROWS) -> Figure:
    """The default pipeline as boxes in reading order, each coloured by where it comes from.

    The origins are read from :data:`cpmc_lib.components.COMPONENTS`, so the picture follows the
    declaration; one legend names the origins.
    """
    from .components import COMPONENTS

    origin = {c.name: c.origin for c in COMPONENTS}
    steps = [[(s, origin[s]) if isinstance(s, str) else tuple(s) for s in row] for row in rows]
    width = max(len(r) for r in steps)
    fig = Figure(figsize=(COLUMN_IN, 1.0 * len(steps) + 0.6), layout="constrained")
    ax = fig.subplots()
    ax.set_xlim(0, width)
    ax.set_ylim(-len(steps) + 1.03, 0.87)
    ax.axis("off")
    centers = []
    for r, row in enumerate(steps):
        for c, (name, org) in enumerate(row):
            x, y = c + 0.5, -r + 0.45
            ax.add_patch(FancyBboxPatch((x - 0.44, y - 0.33), 0.88, 0.66, boxstyle="round,pad=0.02",
                                        facecolor=ORIGIN_COLORS[org], edgecolor="none"))  # fmt: skip
            ax.text(x, y, textwrap.fill(name, 13), ha="center", va="center", color="white", fontsize=TICK_PT)
            centers.append((x, y))
    for (x0, y0), (x1, y1) in itertools.pairwise(centers):
        same_row = abs(y0 - y1) < 1e-6
        start, end = ((x0 + 0.46, y0), (x1 - 0.46, y1)) if same_row else ((x0, y0 - 0.35), (x1, y1 + 0.35))
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, color="#444444",
                                     connectionstyle="arc3" if same_row else "angle3,angleA=0,angleB=90"))  # fmt: skip
    used = list(dict.fromkeys(org for row in steps for _, org in row))
    fig.legend(handles=[Patch(color=ORIGIN_COLORS[o], label=ORIGIN_NAMES[o]) for o in used],
               loc="outside lower center", ncols=3, fontsize=TICK_PT, frameon=False)  # fmt: skip
    return fig


def toy_labels() -> tuple[torch.Tensor, torch.Tensor]:
    """A toy image of one class for :func:`plot_calibration_regions`: (h, w) labels ``L_C`` of the
    refined classifier CAM (the discriminative part, plus one cell the prototype calls background) and
    ``L_P`` of the prototype CAM (the part, the body around it, and a detached look-alike)."""
    l_c, l_p = torch.zeros(12, 12, dtype=torch.int64), torch.zeros(12, 12, dtype=torch.int64)
    l_c[6:9, 2:5] = 1  # the part the classifier fires on
    l_p[5:10, 2:8] = 1  # the body the prototype reaches, around the part
    l_p[6, 2] = 0  # a cell only the classifier gives the class
    l_p[1:4, 8:11] = 1  # a look-alike, touching nothing the classifier found
    return l_c, l_p


def plot_calibration_regions() -> Figure:
    """The FN and FP regions of a toy image, computed by :mod:`cpmc_lib.calibration` (the default
    pairing): the two maps' labels, then the prototype's extra cells split by attachment."""
    from .calibration import attached_to, false_negative_regions, false_positive_regions
    from .prototypes import one_hot_labels

    l_c, l_p = toy_labels()
    extra = false_negative_regions(l_p[None], l_c[None], 2)  # E_c: the prototype's, not the classifier's
    fn = attached_to(extra, one_hot_labels(l_c[None], 2))[0, 1]
    fp = (extra[0, 1] & ~fn) | false_positive_regions(l_p[None], l_c[None], 2)[0, 1]
    grey, obj = np.array([128, 128, 128]), np.array([40, 40, 40])
    ext, green, red = np.array([200, 200, 200]), np.array([0, 170, 0]), np.array([220, 0, 0])

    def paint(*layers: tuple[torch.Tensor, np.ndarray]) -> np.ndarray:
        out = np.broadcast_to(grey, (*l_c.shape, 3)).copy()
        for mask, colour in layers:
            out[mask.numpy()] = colour
        return out.astype(np.uint8)

    panels = [paint((l_c == 1, obj)), paint((l_p == 1, obj)),
              paint((l_c == 1, obj), (extra[0, 1], ext)), paint((l_c == 1, obj), (fn, green), (fp, red))]  # fmt: skip
    titles = ["L_C: the refined classifier CAM's class", "L_P: the prototype CAM's class",
              "E_c: the prototype's extra cells (light)", "FN (green): attached; FP (red): the rest"]  # fmt: skip
    fig = plot_image_grid([panels], [titles])
    for ax in fig.axes:
        ax.images[0].set_interpolation("nearest")
    handles = [Patch(facecolor=c / 255, edgecolor="0.5", label=n) for c, n in
               ((obj, "class c"), (ext, "extra cells"), (green, "false negative"), (red, "false positive"), (grey, "background"))]  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=TICK_PT, frameon=False)
    return fig
