"""Figures for the chapters: masks, CAM overlays, curves. Each function returns a Figure.

Figures are built with ``matplotlib.figure.Figure`` rather than ``pyplot``, so nothing is
registered globally: a notebook shows the returned figure once, and scripts can ``savefig`` it.

Every figure is sized for the book's text column (:data:`COLUMN_IN` inches at the notebook's
100 dpi, so it is shown at about its own size): at most three image panels a row (each about 225
pixels wide in the book), titles of
:data:`TITLE_PT` points, a colour bar beside heat maps and a class legend under masks. Maps on the
feature grid are upsampled once, bilinearly, like the CAMs the cams stage saves.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .io import IGNORE_INDEX, voc_palette

__all__ = [
    "COLUMN_IN",
    "MAX_COLS",
    "TITLE_PT",
    "colorize",
    "mask_palette",
    "overlay_cam",
    "class_legend",
    "median_index",
    "plot_at_a_glance",
    "plot_bars",
    "plot_cam_methods",
    "plot_columns",
    "plot_curves",
    "plot_deltas",
    "plot_history",
    "plot_image_grid",
    "plot_matrix",
    "plot_regions",
    "plot_samples",
    "to_hwc_uint8",
    "upsample",
]


COLUMN_IN = 6.8  # the book's output column (688 px in sphinx-book-theme at 1280 px), inches at 100 dpi
MAX_COLS = 2  # image panels per row: about 300 px each at column width (three would be about 218)
TITLE_PT = 10  # panel titles
TICK_PT = 9  # tick labels, legends


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width)) if len(text) > width else text


def class_legend(
    fig: Figure, class_names: Sequence[str], classes: Sequence[int], extra: Sequence[Patch] = (), extra_title: str = ""
) -> None:
    """The figure's one legend, under it: the mask colours of ``classes`` (ids into ``class_names``;
    255 shows as "ignored"), then the ``extra`` swatches (e.g. diagnostic colours) named by ``extra_title``."""
    pal = mask_palette(class_names)
    named = sorted(set(classes) - {IGNORE_INDEX})
    handles = [Patch(facecolor=pal[c] / 255, edgecolor="0.5", label=class_names[c]) for c in named]
    if IGNORE_INDEX in set(classes):
        handles.append(Patch(facecolor=pal[IGNORE_INDEX] / 255, edgecolor="0.5", label="ignored"))
    handles += list(extra)
    if handles:
        title = "mask colours" + (f" · {extra_title}" if extra else "")
        # as many columns as the widest entry (swatch and gap, text at ~0.5 em a character) lets fit
        entry_in = 0.6 + max(len(h.get_label()) for h in handles) * 0.5 * TICK_PT / 72
        ncols = max(1, min(len(handles), 6, int(fig.get_figwidth() // entry_in)))
        lines = -(-len(handles) // ncols) + 1  # and the title
        fig.set_figheight(fig.get_figheight() + lines * 0.2)  # room for it, not taken from the panels
        fig.legend(handles=handles, loc="outside lower center", ncols=ncols,
                   fontsize=TICK_PT, title=title, title_fontsize=TICK_PT, frameon=False)  # fmt: skip


def _present(masks: Sequence[np.ndarray | torch.Tensor]) -> list[int]:
    ids: set[int] = set()
    for m in masks:
        a = m.cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
        ids |= {int(v) for v in np.unique(a)}
    return sorted(ids)


def to_hwc_uint8(img: np.ndarray | torch.Tensor) -> np.ndarray:
    """An image as (H, W, 3) uint8 for matplotlib, from (3, H, W) / (H, W, 3), uint8 or float in [0, 1]."""
    x = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if x.ndim == 3 and x.shape[0] == 3 and x.shape[-1] != 3:
        x = x.transpose(1, 2, 0)
    if x.dtype != np.uint8:
        x = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    return x


def mask_palette(class_names: Sequence[str] | None = None) -> np.ndarray:
    """The (256, 3) uint8 colours of mask classes: each class in the colour its name says, else VOC's.

    Classes named ``<colour>-<shape>`` (the synthetic benchmark's ``red-disc``, ``white-triangle``)
    get that colour, so a legend's name and its swatch agree; the background is then mid grey
    (black and white are class colours). Names without distinct colour words (PASCAL VOC, COCO) keep
    the VOC palette. 255 (ignored) is VOC's cream in both.
    """
    from matplotlib.colors import is_color_like, to_rgb

    pal = voc_palette()
    words = [n.split("-", 1)[0] for n in (class_names or [])[1:]]
    if words and len(set(words)) == len(words) and all(w.isalpha() and is_color_like(w) for w in words):
        pal[0] = (128, 128, 128)
        for k, w in enumerate(words, 1):
            pal[k] = np.round(np.array(to_rgb(w)) * 255).astype(np.uint8)
    return pal


def colorize(mask: np.ndarray | torch.Tensor, class_names: Sequence[str] | None = None) -> np.ndarray:
    """Class-index mask (H, W) to (H, W, 3) uint8 colours of :func:`mask_palette` (255 = ignore, cream)."""
    m = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return mask_palette(class_names)[m.astype(np.int64).clip(0, 255)]


def overlay_cam(
    img: np.ndarray | torch.Tensor, cam: np.ndarray | torch.Tensor, alpha: float = 0.5
) -> np.ndarray:
    """Blend a map in [0, 1] (H, W) over an image as a jet heat map; returns (H, W, 3) uint8."""
    from matplotlib import colormaps

    base = to_hwc_uint8(img).astype(np.float32) / 255
    c = cam.detach().cpu().numpy() if isinstance(cam, torch.Tensor) else np.asarray(cam, dtype=np.float32)
    heat = colormaps["jet"](np.clip(c, 0, 1))[..., :3]
    blend = ((1 - alpha) * base + alpha * heat).clip(0, 1)
    return (blend * 255).round().astype(np.uint8)


def plot_image_grid(
    rows: Sequence[Sequence[np.ndarray]],
    titles: Sequence[Sequence[str]] | None = None,
    row_labels: Sequence[str] | None = None,
    size: float | None = None,
    suptitle: str | None = None,
    colorbar: str | None = None,
    legend: tuple[Sequence[str], Sequence[int]] | None = None,
    max_cols: int = MAX_COLS,
) -> Figure:
    """A grid of images: ``rows[r][c]`` is an (H, W, 3) or (H, W) array (None leaves a cell empty).

    Args:
        titles: a title per panel.
        row_labels: a label left of each row.
        size: panel size in inches (default: the column width shared by the panels of a row).
        colorbar: label of a jet colour bar for the heat maps (0 to 1), drawn under the grid.
        legend: ``(class_names, class_ids)``: a legend of the mask colours of those classes.
        max_cols: rows with more panels continue on the next line (titles and labels follow).
    """
    if max(len(r) for r in rows) > max_cols:  # wrap long rows into lines of equal length (4 -> 2 + 2)
        wrapped, wtitles, wlabels = [], [], []
        for r, row in enumerate(rows):
            per = -(-len(row) // -(-len(row) // max_cols))
            for start in range(0, len(row), per):
                wrapped.append(list(row[start : start + per]))
                wtitles.append(list(titles[r][start : start + per]) if titles is not None else [])
                wlabels.append(row_labels[r] if row_labels is not None and start == 0 else "")
        rows, titles = wrapped, (wtitles if titles is not None else None)
        row_labels = wlabels if row_labels is not None else None
    nrows, ncols = len(rows), max(len(r) for r in rows)
    label_in = 0.35 if row_labels is not None else 0.0
    panel = (COLUMN_IN - label_in) / ncols if size is None else min(size, (COLUMN_IN - label_in) / ncols)
    extra = (0.5 if suptitle else 0) + (0.55 if colorbar else 0)  # class_legend adds the legend's own room
    fig = Figure(figsize=(panel * ncols + label_in, (panel + 0.35) * nrows + extra), layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    chars = max(12, int(panel * 72 / (0.55 * TITLE_PT)))  # characters that fit on one title line
    for r in range(nrows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_axis_off()
            if c < len(rows[r]) and rows[r][c] is not None:
                im = rows[r][c]
                ax.imshow(im, cmap="gray" if np.asarray(im).ndim == 2 else None, interpolation="bilinear")
                if titles is not None and c < len(titles[r]):
                    ax.set_title(_wrap(titles[r][c], chars), fontsize=TITLE_PT)
        if row_labels is not None and row_labels[r]:
            axes[r, 0].set_axis_on()
            axes[r, 0].set_xticks([])
            axes[r, 0].set_yticks([])
            for spine in axes[r, 0].spines.values():
                spine.set_visible(False)
            axes[r, 0].set_ylabel(row_labels[r], fontsize=TITLE_PT)
    if colorbar:
        cb = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap="jet"), ax=axes.ravel().tolist(),
                          location="bottom", shrink=0.6, aspect=40, pad=0.02)  # fmt: skip
        cb.set_label(colorbar, fontsize=TICK_PT)
        cb.ax.tick_params(labelsize=TICK_PT)
    if legend:
        class_legend(fig, *legend)
    if suptitle:
        fig.suptitle(_wrap(suptitle, int(COLUMN_IN * 72 / (0.55 * 11))), fontsize=11)
    return fig


def plot_columns(
    per_image: Sequence[Sequence[np.ndarray]],
    kinds: Sequence[str],
    names: Sequence[str] | None = None,
    **kwargs,
) -> Figure:
    """One column per image (at most :data:`MAX_COLS`), one row per kind of panel.

    Args:
        per_image: ``per_image[i][r]`` is image ``i``'s panel of kind ``kinds[r]`` (e.g. image,
            ground truth, label, label after the CRF); images past :data:`MAX_COLS` are left out.
        kinds: the row labels.
        names: titles of the first row (the images' names).
        **kwargs: passed to :func:`plot_image_grid` (``legend``, ``colorbar``).
    """
    per_image = list(per_image)[:MAX_COLS]
    rows = [list(r) for r in zip(*per_image, strict=True)]
    first = list(names)[: len(per_image)] if names is not None else [""] * len(per_image)
    titles = [first] + [[""] * len(per_image) for _ in rows[1:]]
    return plot_image_grid(rows, titles, row_labels=list(kinds), **kwargs)


def plot_samples(
    samples: Sequence[Mapping], class_names: Sequence[str], diag_names: Mapping[int, str] | None = None
) -> Figure:
    """One column per sample (at most :data:`MAX_COLS`): the image, its ground-truth mask and (when
    present) its diagnostic mask.

    Args:
        samples: dataset items with ``img`` (3, H, W) uint8, ``mask`` (H, W), ``label`` (K-1,) and
            optionally ``diag`` (H, W).
        class_names: K names, index 0 background.
        diag_names: diagnostic code -> description, for the legend.
    """
    samples = list(samples)[:MAX_COLS]
    has_diag = all("diag" in s for s in samples)
    diag_colors = _diag_colors(diag_names) if has_diag and diag_names else None
    columns, names = [], []
    for s in samples:
        keys = (torch.as_tensor(s["label"]).nonzero().flatten() + 1).tolist()
        names.append(f"{s['name']}: {', '.join(class_names[k] for k in keys)}")
        column = [to_hwc_uint8(s["img"]), colorize(s["mask"], class_names)]
        if has_diag:
            d = np.asarray(s["diag"])
            column.append(diag_colors[d] if diag_colors is not None else d)
        columns.append(column)
    fig = plot_columns(columns, ["image", "mask (judged on)", *(["diagnostics"] if has_diag else [])], names)
    diag = [] if diag_colors is None else [
        Patch(color=diag_colors[c] / 255, label=f"({c}) {n}") for c, n in diag_names.items()]  # fmt: skip
    class_legend(fig, class_names, _present([s["mask"] for s in samples]), diag, "diagnostic colours (n)")
    return fig


def _diag_colors(diag_names: Mapping[int, str]) -> np.ndarray:
    from matplotlib import colormaps

    table = np.zeros((256, 3), dtype=np.uint8)
    cmap = colormaps["tab10"]
    for i, code in enumerate(sorted(c for c in diag_names if c != IGNORE_INDEX)):
        table[code] = (np.array(cmap(i)[:3]) * 255).astype(np.uint8)
    table[IGNORE_INDEX] = (255, 255, 255)
    return table


def plot_history(history: Sequence[Mapping[str, float]], keys: Sequence[str], title: str = "") -> Figure:
    """Per-epoch curves: one panel per key of the history records (e.g. ``loss``, ``val_mAP``)."""
    fig = Figure(figsize=(min(COLUMN_IN, 2.4 * len(keys)), 2.6), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    for ax, key in zip(axes, keys, strict=True):
        ax.plot(epochs, [h.get(key, np.nan) for h in history], marker="o")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no ticks between epochs
        ax.set_xlabel("epoch", fontsize=TICK_PT)
        ax.set_title(key, fontsize=TITLE_PT)
        ax.tick_params(labelsize=TICK_PT)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_curves(
    curves: Mapping[str, Sequence[Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str = "",
    mark_best: bool = True,
) -> Figure:
    """Several ``[(x, y), ...]`` curves on one axis, e.g. mIoU against background threshold per method."""
    fig = Figure(figsize=(COLUMN_IN * 0.85, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.tick_params(labelsize=TICK_PT)
    for name, pts in curves.items():
        xy = np.asarray(pts, dtype=float)
        (line,) = ax.plot(xy[:, 0], xy[:, 1], label=name)
        if mark_best and len(xy):
            b = np.nanargmax(xy[:, 1])
            ax.plot(xy[b, 0], xy[b, 1], "o", color=line.get_color())
    xs = np.concatenate([np.asarray(pts, dtype=float).reshape(-1, 2)[:, 0] for pts in curves.values()])
    if xs.size and np.all(xs == np.round(xs)):  # epochs, iterations: no ticks between them
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel, fontsize=TITLE_PT)
    ax.set_ylabel(ylabel, fontsize=TITLE_PT)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=TICK_PT)
    if title:
        ax.set_title(_wrap(title, 70), fontsize=TITLE_PT)
    return fig


def plot_bars(
    values: Mapping[str, Sequence[float]], labels: Sequence[str], ylabel: str, title: str = ""
) -> Figure:
    """Grouped bars: ``values[series][i]`` for category ``labels[i]`` (e.g. per-class IoU per method),
    each bar labelled with its value while the bars are few enough (at most 12) to read them."""
    n = len(values)
    x = np.arange(len(labels))
    width = 0.8 / max(n, 1)
    fig = Figure(figsize=(COLUMN_IN, 3.4), layout="constrained")
    ax = fig.subplots()
    for i, (name, v) in enumerate(values.items()):
        bars = ax.bar(x + (i - (n - 1) / 2) * width, np.asarray(v, dtype=float), width, label=name)
        if n * len(labels) <= 16:
            ax.bar_label(bars, fmt="%.1f", fontsize=TICK_PT - 1, padding=1)
            ax.margins(y=0.12)  # room for the labels under the title
    ax.set_xticks(x, labels, rotation=45 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center",
                  fontsize=TICK_PT)  # fmt: skip
    ax.tick_params(axis="y", labelsize=TICK_PT)
    ax.set_ylabel(ylabel, fontsize=TITLE_PT)
    ax.grid(alpha=0.3, axis="y")
    if n > 1:
        ax.legend(fontsize=TICK_PT, ncols=min(n, 4), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    if title:
        ax.set_title(_wrap(title, 70), fontsize=TITLE_PT, pad=22 if n > 1 else 6)
    return fig


def plot_matrix(
    matrix: Sequence[Sequence[float]], labels: Sequence[str], title: str = "", fmt: str = "d"
) -> Figure:
    """A labelled square matrix as a heat map with its values written in the cells."""
    m = np.asarray(matrix)
    side = min(COLUMN_IN, 0.45 * len(labels) + 2.2)
    fig = Figure(figsize=(side, side * 0.85), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=TICK_PT)
    ax.set_yticks(range(len(labels)), labels, fontsize=TICK_PT)
    for (i, j), v in np.ndenumerate(m):
        ax.text(
            j,
            i,
            format(v, fmt),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if v > m.max() / 2 else "black",
        )
    fig.colorbar(im, ax=ax, shrink=0.8).ax.tick_params(labelsize=TICK_PT)
    if title:
        ax.set_title(title, fontsize=TITLE_PT)
    return fig


def plot_cam_methods(
    samples: Sequence[Mapping],
    maps: Mapping[str, Sequence[Mapping]],
    class_names: Sequence[str],
    thresholds: Mapping[str, float] | None = None,
) -> Figure:
    """One column per image (at most three): the image, its mask, then each method's map (max over
    the image's classes) and, with ``thresholds``, the mask it becomes.

    Args:
        samples: dataset items with ``img`` (3, H, W) uint8, ``mask`` (H, W), ``name``.
        maps: method -> per-sample saved maps (:class:`cpmc_lib.mapfile.SavedMap`: ``keys`` (k,), ``cam`` (k, H, W))
            (:func:`cpmc_lib.cams.load_cams`).
        class_names: K names, for the mask legend.
        thresholds: method -> background threshold; when given, a row per method shows its mask.
    """
    from .cam_methods import CAM_METHODS
    from .metrics import cam_to_mask

    title = {m: c.title for m, c in CAM_METHODS.items()}  # readable row labels
    samples = list(samples)[:MAX_COLS]
    imgs = [to_hwc_uint8(s["img"]) for s in samples]
    rows, labels, titles = [imgs, [colorize(s["mask"], class_names) for s in samples]], ["image", "ground truth"], []
    titles = [[s["name"] for s in samples], [""] * len(samples)]
    masks = [s["mask"] for s in samples]
    for method, per_sample in maps.items():
        cams = [np.asarray(per_sample[i].cam, dtype=np.float32) for i in range(len(samples))]
        rows.append([overlay_cam(img, c.max(0) if len(c) else np.zeros(img.shape[:2])) for img, c in zip(imgs, cams, strict=True)])
        labels.append(title.get(method, method))
        titles.append([""] * len(samples))
        if thresholds is not None:
            t = thresholds[method]
            preds = [np.asarray(cam_to_mask(c, per_sample[i].keys, t)) for i, c in enumerate(cams)]
            masks += preds
            rows.append([colorize(m, class_names) for m in preds])
            labels.append(f"its mask @ {t:.2f}")
            titles.append([""] * len(samples))
    return plot_image_grid(rows, titles, row_labels=labels, colorbar="map value (max over the image's classes)",
                           legend=(class_names, _present(masks)))  # fmt: skip


def upsample(x: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A map on the feature grid (h, w) to image size (H, W), bilinear (the cams stage's upsampling)."""
    up = torch.nn.functional.interpolate(x[None, None].float(), size=size, mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


def _mask_overlay(
    img: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], alpha: float = 0.55
) -> np.ndarray:
    out = img.astype(np.float32).copy()
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, dtype=np.float32)
    return out.round().astype(np.uint8)


def _regions(img: np.ndarray, steps: Mapping[str, torch.Tensor], i: int, which=("fn", "fp")) -> np.ndarray:
    """The FN (green) and FP (red) regions of image ``i`` over a pale grey copy of it (so the two colours
    stand out from the textures; grid cells upsampled bilinearly, > 0.5)."""
    grey = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    out = np.repeat((160 + 0.35 * grey)[..., None], 3, axis=-1).round().astype(np.uint8)
    for k, colour in (("fn", (0, 200, 0)), ("fp", (230, 0, 0))):
        if k in which:
            out = _mask_overlay(out, upsample(steps[k][i, 1:].any(0), img.shape[:2]) > 0.5, colour)
    return out


def plot_regions(
    samples: Sequence[Mapping],
    steps: Mapping[str, torch.Tensor],
    indices: Sequence[int],
    class_names: Sequence[str] | None = None,
) -> Figure:
    """CPMC's intermediate maps, one column per image (at most three): the image, its mask, the
    prototype CAM, the FN (green) and FP (red) regions and the calibrated map.

    Args:
        samples: dataset items (``img`` uint8 (3, H, W), ``mask``, ``name``).
        steps: :meth:`cpmc_lib.explorer.Explorer.steps`'s dict ((N, K, h, w) maps and region masks).
        indices: which samples to draw (the first three).
        class_names: K names, for the mask legend.
    """
    indices = list(indices)[:MAX_COLS]
    imgs = {i: to_hwc_uint8(samples[i]["img"]) for i in indices}
    up = {k: {i: upsample(steps[k][i, 1:].amax(0), imgs[i].shape[:2]) for i in indices} for k in ("proto", "cpmc")}
    rows = [
        [imgs[i] for i in indices],
        [colorize(samples[i]["mask"], class_names) for i in indices],
        [overlay_cam(imgs[i], up["proto"][i]) for i in indices],
        [_regions(imgs[i], steps, i) for i in indices],
        [overlay_cam(imgs[i], up["cpmc"][i]) for i in indices],
    ]
    titles = [[samples[i]["name"] for i in indices]] + [[""] * len(indices)] * 4
    labels = ["image", "ground truth", "prototype CAM", "FN green / FP red", "CPMC"]
    legend = (class_names, _present([samples[i]["mask"] for i in indices])) if class_names else None
    return plot_image_grid(rows, titles, row_labels=labels, colorbar="map value", legend=legend)


def median_index(gains: Sequence[float]) -> int:
    """The index of the median of ``gains`` (the lower median for an even count; NaN last).

    Example:
        >>> median_index([5.0, -1.0, 2.0, 9.0])
        2
    """
    g = np.asarray(gains, dtype=float)
    order = np.argsort(np.where(np.isnan(g), np.inf, g), kind="stable")
    n = int((~np.isnan(g)).sum())
    if n == 0:
        raise ValueError("median_index: no finite gain")
    return int(order[(n - 1) // 2])


def plot_at_a_glance(
    samples: Sequence[Mapping],
    steps: Mapping[str, torch.Tensor],
    index: int = 0,
    pred: np.ndarray | None = None,
    pred_title: str = "CPMC mask",
    class_names: Sequence[str] | None = None,
    note: str = "",
) -> Figure:
    """CPMC on one image, step by step: the figure that explains the method at a glance.

    Args:
        samples: dataset items (``img`` uint8 (3, H, W), ``mask``, ``name``).
        steps: :meth:`cpmc_lib.explorer.Explorer.steps`'s dict ((N, K, h, w) maps and region masks).
        index: the sample to draw, chosen by the caller's stated rule (e.g. :func:`median_index` of
            the per-image IoU gains), never by how good the figure looks.
        pred: when given, a last panel shows this (H, W) mask (e.g. CPMC's, at its threshold).
        pred_title: that panel's title.
        class_names: K names, for the mask legend.
        note: a line under the title (e.g. the rule and the image's measured gain).
    """
    img = to_hwc_uint8(samples[index]["img"])
    key = {k: steps[k][index : index + 1, 1:] for k in ("cam", "refined", "proto", "cpmc")}
    up = {k: upsample(v[0].amax(0), img.shape[:2]) for k, v in key.items()}
    row = [img, overlay_cam(img, up["cam"]), overlay_cam(img, up["refined"]), overlay_cam(img, up["proto"]),
           _regions(img, steps, index), overlay_cam(img, up["cpmc"]), colorize(samples[index]["mask"], class_names)]  # fmt: skip
    titles = ["image", "1 classifier CAM", "2 refined by context", "3 prototype CAM",
              "4 FN (green) / FP (red)", "5 CPMC", "ground truth"]  # fmt: skip
    masks = [samples[index]["mask"]]
    if pred is not None:
        masks.append(pred)
        row.append(colorize(pred, class_names))
        titles.append(pred_title)
    legend = (class_names, _present(masks)) if class_names else None
    title = f"CPMC at a glance: {samples[index]['name']}" + (f" ({note})" if note else "")
    return plot_image_grid([row], [titles], suptitle=title, colorbar="map value", legend=legend)


def plot_deltas(
    rows: Sequence[Mapping], reference: str, title: str = "", key: str = "miou", folds: str = "miou_folds"
) -> Figure:
    """Each variant's difference to a reference row, with its spread over image subsets.

    Args:
        rows: :meth:`cpmc_lib.explorer.Explorer.ablation` rows (``variant``, ``miou``, ``miou_folds``).
        reference: the variant every other row is compared with.
        title: the axis title.

    Returns:
        A horizontal bar chart of ``miou - miou[reference]`` per variant, with error bars of one
        standard deviation of the per-subset differences (when ``miou_folds`` is present).
    """
    by = {r["variant"]: r for r in rows}
    ref = by[reference]
    others = [r for r in rows if r["variant"] != reference]
    delta = np.array([r[key] - ref[key] for r in others])
    spread = None
    if all(folds in r for r in rows):
        spread = np.array([np.std(np.subtract(r[folds], ref[folds]), ddof=1) for r in others])
    fig = Figure(figsize=(COLUMN_IN, 0.38 * len(others) + 1.2), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(others))[::-1]
    ax.barh(y, delta, xerr=spread, color=["tab:green" if d > 0 else "tab:red" for d in delta], capsize=3)
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_yticks(y, [r["variant"] for r in others], fontsize=TICK_PT)
    ax.tick_params(axis="x", labelsize=TICK_PT)
    ax.set_xlabel(f"mIoU difference to {reference} (points)", fontsize=TITLE_PT)
    ax.grid(alpha=0.3, axis="x")
    if title:
        ax.set_title(_wrap(title, 70), fontsize=TITLE_PT)
    return fig
