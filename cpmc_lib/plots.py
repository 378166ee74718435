"""Figures for the chapters: masks, CAM overlays, curves. Each function returns a Figure.

Figures are built with ``matplotlib.figure.Figure`` rather than ``pyplot``, so nothing is
registered globally: a notebook shows the returned figure once, and scripts can ``savefig`` it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .io import IGNORE_INDEX, voc_palette

__all__ = [
    "colorize",
    "overlay_cam",
    "plot_at_a_glance",
    "plot_bars",
    "plot_cam_methods",
    "plot_curves",
    "plot_history",
    "plot_image_grid",
    "plot_matrix",
    "plot_regions",
    "plot_samples",
    "to_hwc_uint8",
]


def to_hwc_uint8(img: np.ndarray | torch.Tensor) -> np.ndarray:
    """An image as (H, W, 3) uint8 for matplotlib, from (3, H, W) / (H, W, 3), uint8 or float in [0, 1]."""
    x = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if x.ndim == 3 and x.shape[0] == 3 and x.shape[-1] != 3:
        x = x.transpose(1, 2, 0)
    if x.dtype != np.uint8:
        x = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    return x


def colorize(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """Class-index mask (H, W) to (H, W, 3) uint8 colours of the VOC palette (255 = ignore, cream)."""
    m = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    return voc_palette()[m.astype(np.int64).clip(0, 255)]


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
    size: float = 2.2,
    suptitle: str | None = None,
) -> Figure:
    """A grid of images: ``rows[r][c]`` is an (H, W, 3) or (H, W) array."""
    nrows, ncols = len(rows), max(len(r) for r in rows)
    fig = Figure(figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    for r in range(nrows):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_axis_off()
            if c < len(rows[r]) and rows[r][c] is not None:  # None leaves a cell empty
                im = rows[r][c]
                ax.imshow(im, cmap="gray" if np.asarray(im).ndim == 2 else None, interpolation="nearest")
                if titles is not None and c < len(titles[r]):
                    ax.set_title(titles[r][c], fontsize=8)
        if row_labels is not None:
            axes[r, 0].set_axis_on()
            axes[r, 0].set_xticks([])
            axes[r, 0].set_yticks([])
            axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_samples(
    samples: Sequence[Mapping], class_names: Sequence[str], diag_names: Mapping[int, str] | None = None
) -> Figure:
    """Image, ground-truth mask, and (when present) the diagnostic mask of each sample.

    Args:
        samples: dataset items with ``img`` (3, H, W) uint8, ``mask`` (H, W), ``label`` (K-1,) and
            optionally ``diag`` (H, W).
        class_names: K names, index 0 background.
        diag_names: diagnostic code -> description, for the legend.
    """
    rows, titles = [], []
    has_diag = all("diag" in s for s in samples)
    diag_colors = _diag_colors(diag_names) if has_diag and diag_names else None
    for s in samples:
        keys = (torch.as_tensor(s["label"]).nonzero().flatten() + 1).tolist()
        label = ", ".join(class_names[k] for k in keys)
        row = [to_hwc_uint8(s["img"]), colorize(s["mask"])]
        title = [f"{s['name']}\nlabel: {label}", "mask (what it is judged on)"]
        if has_diag:
            d = np.asarray(s["diag"])
            row.append(diag_colors[d] if diag_colors is not None else d)
            title.append("diagnostics")
        rows.append(row)
        titles.append(title)
    fig = plot_image_grid(rows, titles, size=2.6)
    if diag_colors is not None:
        handles = [Patch(color=diag_colors[c] / 255, label=f"{c}: {n}") for c, n in diag_names.items()]
        fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=7)
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
    fig = Figure(figsize=(3.4 * len(keys), 2.8), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    for ax, key in zip(axes, keys, strict=True):
        ax.plot(epochs, [h.get(key, np.nan) for h in history], marker="o")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def plot_curves(
    curves: Mapping[str, Sequence[Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str = "",
    mark_best: bool = True,
) -> Figure:
    """Several ``[(x, y), ...]`` curves on one axis, e.g. mIoU against background threshold per method."""
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for name, pts in curves.items():
        xy = np.asarray(pts, dtype=float)
        (line,) = ax.plot(xy[:, 0], xy[:, 1], label=name)
        if mark_best and len(xy):
            b = np.nanargmax(xy[:, 1])
            ax.plot(xy[b, 0], xy[b, 1], "o", color=line.get_color())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def plot_bars(
    values: Mapping[str, Sequence[float]], labels: Sequence[str], ylabel: str, title: str = ""
) -> Figure:
    """Grouped bars: ``values[series][i]`` for category ``labels[i]`` (e.g. per-class IoU per method)."""
    n = len(values)
    x = np.arange(len(labels))
    width = 0.8 / max(n, 1)
    fig = Figure(figsize=(max(5.5, 0.45 * len(labels) * max(n, 1) + 1.5), 3.4), layout="constrained")
    ax = fig.subplots()
    for i, (name, v) in enumerate(values.items()):
        ax.bar(x + (i - (n - 1) / 2) * width, np.asarray(v, dtype=float), width, label=name)
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    if n > 1:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def plot_matrix(
    matrix: Sequence[Sequence[float]], labels: Sequence[str], title: str = "", fmt: str = "d"
) -> Figure:
    """A labelled square matrix as a heat map with its values written in the cells."""
    m = np.asarray(matrix)
    fig = Figure(figsize=(0.5 * len(labels) + 2.5, 0.5 * len(labels) + 2), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for (i, j), v in np.ndenumerate(m):
        ax.text(
            j,
            i,
            format(v, fmt),
            ha="center",
            va="center",
            fontsize=6,
            color="white" if v > m.max() / 2 else "black",
        )
    fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        ax.set_title(title)
    return fig


def plot_cam_methods(
    samples: Sequence[Mapping],
    maps: Mapping[str, Sequence[Mapping]],
    class_names: Sequence[str],
    thresholds: Mapping[str, float] | None = None,
) -> Figure:
    """Rows of images: the image with its mask, then each method's map (max over the image's classes).

    Args:
        samples: dataset items with ``img`` (3, H, W) uint8, ``mask`` (H, W), ``name``.
        maps: method -> per-sample saved maps ``{"keys": (k,), "cam": (k, H, W)}``
            (:func:`cpmc_lib.cams.load_cams`).
        thresholds: method -> background threshold; when given, a second row per image shows the
            method's predicted mask at that threshold.
    """
    from .metrics import cam_to_mask

    rows, titles = [], []
    for i, s in enumerate(samples):
        img = to_hwc_uint8(s["img"])
        row, title = [img, colorize(s["mask"])], [s["name"], "ground truth"]
        pred_row, pred_title = [None, None], ["", ""]
        for method, per_sample in maps.items():
            cam = np.asarray(per_sample[i]["cam"], dtype=np.float32)
            row.append(overlay_cam(img, cam.max(0) if len(cam) else np.zeros(img.shape[:2])))
            title.append(method)
            if thresholds is not None:
                t = thresholds[method]
                pred = cam_to_mask(cam, per_sample[i]["keys"], t)
                pred_row.append(colorize(np.asarray(pred)))
                pred_title.append(f"{method} @ {t:.2f}")
        rows.append(row)
        titles.append(title)
        if thresholds is not None:
            rows.append(pred_row)
            titles.append(pred_title)
    return plot_image_grid(rows, titles, size=2.0)


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A grid map (h, w) to image size, nearest neighbour (cells stay visible)."""
    return torch.nn.functional.interpolate(x[None, None].float(), size=size, mode="nearest")[0, 0].numpy()


def _mask_overlay(
    img: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], alpha: float = 0.55
) -> np.ndarray:
    out = img.astype(np.float32).copy()
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, dtype=np.float32)
    return out.round().astype(np.uint8)


def plot_regions(
    samples: Sequence[Mapping], steps: Mapping[str, torch.Tensor], indices: Sequence[int]
) -> Figure:
    """CPMC's intermediate maps on a few images: prototype CAM, FN / FP regions, calibrated map.

    Args:
        samples: dataset items (``img`` uint8 (3, H, W), ``mask``, ``name``).
        steps: :meth:`cpmc_lib.widgets.Explorer.steps`'s dict ((N, K, h, w) maps and region masks).
        indices: which samples to draw.
    """
    rows, titles = [], []
    for i in indices:
        img = to_hwc_uint8(samples[i]["img"])
        proto, cpmc = (_upsample(steps[k][i, 1:].amax(0), img.shape[:2]) for k in ("proto", "cpmc"))
        fn, fp = (_upsample(steps[k][i, 1:].any(0), img.shape[:2]) > 0 for k in ("fn", "fp"))
        rows.append([
            img, colorize(samples[i]["mask"]), overlay_cam(img, proto),
            _mask_overlay(img, fn, (0, 200, 0)), _mask_overlay(img, fp, (230, 0, 0)), overlay_cam(img, cpmc),
        ])  # fmt: skip
        titles.append([samples[i]["name"], "ground truth", "prototype CAM", "FN region (green)",
                       "FP region (red)", "CPMC"])  # fmt: skip
    return plot_image_grid(rows, titles, size=2.1)


def plot_at_a_glance(
    samples: Sequence[Mapping], steps: Mapping[str, torch.Tensor], index: int | None = None
) -> Figure:
    """CPMC on one image, step by step: the figure that explains the method at a glance.

    Args:
        samples: dataset items (``img`` uint8 (3, H, W), ``mask``, ``name``).
        steps: :meth:`cpmc_lib.widgets.Explorer.steps`'s dict ((N, K, h, w) maps and region masks).
        index: the sample to draw; by default the one whose FN and FP regions are largest, so both
            calibration steps have something to show.
    """
    if index is None:
        region = steps["fn"][:, 1:].flatten(1).sum(1) + steps["fp"][:, 1:].flatten(1).sum(1)
        index = int(region.argmax())
    img = to_hwc_uint8(samples[index]["img"])
    up = {
        k: _upsample(steps[k][index, 1:].amax(0), img.shape[:2]) for k in ("cam", "refined", "proto", "cpmc")
    }
    fn, fp = (_upsample(steps[k][index, 1:].any(0), img.shape[:2]) > 0 for k in ("fn", "fp"))
    regions = _mask_overlay(_mask_overlay(img, fn, (0, 200, 0)), fp, (230, 0, 0))
    row = [img, overlay_cam(img, up["cam"]), overlay_cam(img, up["refined"]), overlay_cam(img, up["proto"]),
           regions, overlay_cam(img, up["cpmc"]), colorize(samples[index]["mask"])]  # fmt: skip
    titles = ["image", "1 classifier CAM", "2 refined by context", "3 prototype CAM",
              "4 FN (green) / FP (red)", "5 CPMC", "ground truth"]  # fmt: skip
    return plot_image_grid([row], [titles], size=2.0,
                           suptitle=f"CPMC at a glance ({samples[index]['name']}): the prototype CAM (3) is calibrated "
                           "by local prototypes from where it disagrees with the refined CAM (4)")  # fmt: skip
