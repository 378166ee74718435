"""An interactive explorer of the CAM methods and CPMC's calibration settings (ipywidgets).

:class:`Explorer` runs the trained classifier once over a handful of training images and keeps its
outputs (classifier projection, last-stage and hierarchical features). Every control change then
recomputes only the cheap part — context refinement, prototypes, FN/FP calibration — over those
cached outputs, redraws the selected image's overlay and updates the running mIoU over all cached
images. No retraining, no new forward pass: responsive on a CPU.

The maps are single-scale without flip (the cams stage fuses scales and flips), so the explorer's
numbers are close to, not equal to, the chapters' tables.

Example (in a notebook):
    >>> ex = Explorer(cfg, store, n_images=32)  # doctest: +SKIP
    >>> ex.widget()  # doctest: +SKIP
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from .cam_methods import make_cam_method, normalize_cams
from .config import Config
from .datasets import build_dataset
from .metrics import CamEvaluator, cam_to_mask
from .models import load_classifier
from .plots import colorize, overlay_cam, plot_image_grid, to_hwc_uint8
from .store import RunStore
from .transforms import eval_transform

__all__ = ["ABLATION", "METHODS", "SETTINGS", "Explorer"]

METHODS = ("cam", "refined", "proto", "cpmc")

# Explorer setting -> config key (the controls of :meth:`Explorer.widget`, in this order).
SETTINGS = {
    "iterations": "refinement.iterations",
    "use_fn": "calibration.use_fn",
    "use_fp": "calibration.use_fp",
    "ref_bg_factor": "calibration.ref_bg_factor",
    "proto_bg_factor": "calibration.proto_bg_factor",
    "pairing": "calibration.pairing",
    "detached": "calibration.detached",
    "fp_radius": "calibration.fp_radius",
}

# The structure of the paper's ablation, as explorer variants: row -> (map, settings).
ABLATION: dict[str, tuple[str, dict[str, Any]]] = {
    "classifier CAM": ("cam", {}),
    "+ context refinement": ("refined", {}),
    "+ prototype CAM": ("proto", {}),
    "+ FN local prototypes": ("cpmc", {"use_fp": False}),
    "+ FP local prototypes": ("cpmc", {"use_fn": False}),
    "full CPMC (FN + FP)": ("cpmc", {}),
    "prototype CAM, no refinement": ("proto", {"iterations": 0}),
    "CPMC, no refinement": ("cpmc", {"iterations": 0}),
    "CPMC, no connectivity split": ("cpmc", {"detached": "keep", "use_fp": False}),
    "CPMC, FP prototypes everywhere": ("cpmc", {"fp_radius": -1}),
    "CPMC, first reading (pairing proto)": ("cpmc", {"pairing": "proto", "detached": "keep", "use_fp": False}),
}


class Explorer:
    """Cached network outputs for ``n_images`` cam-split images, and the widgets that explore them.

    Args:
        cfg: the run's config (its classifier must be trained: ``cl.pipeline.ensure(cfg, "classifier")``).
        store: the run store holding the classifier.
        n_images: how many images to cache (the running mIoU is over these).
    """

    def __init__(self, cfg: Config, store: RunStore, n_images: int = 32) -> None:
        self.cfg = cfg
        self.model = load_classifier(store.path("classifier") / "model.pt", cfg).eval()
        raw = build_dataset(cfg, cfg.data.cam_split)
        norm = eval_transform()
        n = min(n_images, len(raw))
        self.samples = [raw[i] for i in range(n)]
        self.names = [s["name"] for s in self.samples]
        self.img = torch.stack([norm({"img": s["img"]})["img"] for s in self.samples])
        self.label = torch.stack([s["label"] for s in self.samples])
        with torch.no_grad():
            self.out = self.model(self.img)  # the one forward pass
        self._widgets: dict[str, Any] = {}

    def settings(self, **values: Any) -> Config:
        """The config with explorer settings applied (``iterations``, ``use_fn``, ``use_fp``,
        ``ref_bg_factor``, ``proto_bg_factor``, ``pairing``, ``detached``, ``fp_radius``)."""
        keys = SETTINGS
        unknown = {k for k in values if k not in keys and "." not in k}
        if unknown:
            raise ValueError(
                f"unknown explorer settings {sorted(unknown)}; settings: {', '.join(keys)} or any section.key"
            )
        return self.cfg.replace(**{keys.get(k, k): v for k, v in values.items()})

    @torch.no_grad()
    def steps(self, cfg: Config | None = None) -> dict[str, torch.Tensor]:
        """Every intermediate of CPMC on the cached images, at the CAM grid.

        Returns:
            :func:`cpmc_lib.cpmc.cpmc_maps`'s dict: (N, K, h, w) maps ``cam``, ``refined``, ``proto``,
            ``cpmc`` and bool masks ``seeds``, ``fn``, ``fp`` (background at channel 0).
        """
        from .cpmc import cpmc_maps

        c = cfg or self.cfg
        return cpmc_maps(self.out, self.label, c.refinement, c.prototypes, c.calibration, self.img)

    def region_stats(self, cfg: Config | None = None) -> dict[str, float]:
        """What the FN and FP regions hold, by the benchmark's diagnostic codes (percent of region cells).

        Needs a dataset with diagnostic masks (the synthetic benchmark). Each grid cell takes the
        most frequent diagnostic code of the pixels it covers.
        """
        from . import synth

        steps = self.steps(cfg)
        h, w = steps["fn"].shape[-2:]
        codes = {"neutral": synth.NEUTRAL, "body": synth.BODY, "part": synth.PART, "atypical": synth.ATYPICAL,
                 "context": synth.CONTEXT_PRESENT, "absent_context": synth.CONTEXT_ABSENT,
                 "distractor": synth.DISTRACTOR}  # fmt: skip
        diag = torch.stack([s["diag"] for s in self.samples]).long()
        onehot = torch.stack([(diag == c).float() for c in codes.values()], 1)  # (N, D, H, W)
        cell = F.adaptive_avg_pool2d(onehot, (h, w)).argmax(1)  # (N, h, w) dominant code per cell
        out: dict[str, float] = {}
        for region in ("fn", "fp"):
            mask = steps[region][:, 1:].any(1)  # (N, h, w)
            n = int(mask.sum())
            out[f"{region}_cells_per_image"] = n / len(self.names)
            for i, name in enumerate(codes):
                out[f"{region}_{name}"] = 100.0 * int((cell[mask] == i).sum()) / n if n else float("nan")
        return out

    @torch.no_grad()
    def maps(self, method: str, cfg: Config | None = None) -> torch.Tensor:
        """Normalised foreground maps of every cached image: (N, K-1, H, W)."""
        cfg = cfg or self.cfg
        m = make_cam_method(method, self.model, cfg)
        raw = m.from_output(self.out, self.img, self.label)
        up = F.interpolate(raw.float(), size=self.img.shape[-2:], mode="bilinear", align_corners=False)
        return normalize_cams(up, self.label)

    def score(self, maps: torch.Tensor, threshold: float | None = None) -> dict[str, float]:
        """mIoU, precision and recall of ``maps`` over the cached images.

        Args:
            threshold: background threshold; None sweeps it (``cams.thresholds_step``) and reports
                the best, with its ``threshold``, as the chapters' tables do.
        """
        thresholds = None if threshold is None else [threshold]
        ev = CamEvaluator(
            self.cfg.data.num_classes, thresholds=thresholds, step=self.cfg.cams.thresholds_step
        )
        for cam, label, s in zip(maps, self.label, self.samples, strict=True):
            keys = label.nonzero().flatten()
            ev.update(cam[keys], (keys + 1).tolist(), s["mask"])
        r = ev.compute()
        return {k: r[k] for k in ("miou", "precision", "recall", "threshold")}

    def ablation(self, variants: dict[str, tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Score named variants ``{row: (method, settings)}`` at their best thresholds, in order.

        Example:
            >>> ex.ablation({"classifier CAM": ("cam", {}), "+ FP only": ("cpmc", {"use_fn": False})})  # doctest: +SKIP
        """
        return [
            {"variant": name, "map": method, **self.score(self.maps(method, self.settings(**settings)))}
            for name, (method, settings) in variants.items()
        ]

    def figure(self, index: int, method: str, threshold: float, cfg: Config | None = None) -> Figure:
        """The selected image: image, ground truth, the method's map and its mask at ``threshold``."""
        maps = self.maps(method, cfg)
        label = self.label[index]
        keys = label.nonzero().flatten()
        cam = maps[index, keys].numpy()
        img = to_hwc_uint8(self.samples[index]["img"])
        pred = cam_to_mask(cam, (keys + 1).tolist(), threshold)
        heat = cam.max(0) if len(cam) else np.zeros(img.shape[:2])
        return plot_image_grid(
            [
                [
                    img,
                    colorize(self.samples[index]["mask"]),
                    overlay_cam(img, heat),
                    colorize(np.asarray(pred)),
                ]
            ],
            [[self.names[index], "ground truth", method, f"mask @ {threshold:.2f}"]],
            size=2.6,
        )

    def widget(self):
        """The explorer as an ipywidgets box; every control redraws the overlay and the running mIoU."""
        import ipywidgets as w

        c = self.cfg
        ws = self._widgets = {
            "image": w.Dropdown(
                options=[(n, i) for i, n in enumerate(self.names)], value=0, description="image"
            ),
            "method": w.ToggleButtons(options=METHODS, value="cpmc", description="map"),
            "threshold": w.FloatSlider(value=0.3, min=0.05, max=0.95, step=0.05, description="bg threshold"),
            "iterations": w.IntSlider(value=c.refinement.iterations, min=0, max=6, description="refine T"),
            "use_fn": w.Checkbox(value=c.calibration.use_fn, description="FN local prototypes"),
            "use_fp": w.Checkbox(value=c.calibration.use_fp, description="FP local prototypes"),
            "ref_bg_factor": w.FloatSlider(
                value=c.calibration.ref_bg_factor, min=0.2, max=2.0, step=0.1, description="ref. bg x"
            ),  # fmt: skip
            "proto_bg_factor": w.FloatSlider(
                value=c.calibration.proto_bg_factor, min=0.2, max=2.0, step=0.1, description="proto bg x"
            ),  # fmt: skip
            "detached": w.ToggleButtons(
                options=("keep", "drop", "fp"), value=c.calibration.detached, description="detached"
            ),  # fmt: skip
            "fp_radius": w.IntSlider(value=c.calibration.fp_radius, min=-1, max=4, description="FP reach"),
        }
        ws["out"] = w.Image(format="png")  # the overlay as PNG bytes: also works without a live kernel
        ws["score"] = w.HTML()
        for name, control in ws.items():
            if name not in ("out", "score"):
                control.observe(lambda _change: self.update(), names="value")
        self.update()
        controls = w.VBox([ws[k] for k in ("image", "method", "threshold", *SETTINGS) if k in ws])
        return w.VBox([w.HBox([controls, ws["score"]]), ws["out"]])

    def update(self) -> dict[str, float]:
        """Recompute from the widgets' values; returns the running scores (also shown)."""
        ws = self._widgets
        cfg = self.settings(**{k: ws[k].value for k in SETTINGS if k in ws})
        method, threshold = ws["method"].value, ws["threshold"].value
        scores = self.score(self.maps(method, cfg), threshold)
        ws["score"].value = (
            f"<b>{method}</b> over {len(self.names)} images at threshold {threshold:.2f}:<br>"
            f"mIoU <b>{scores['miou']:.1f}</b>, precision {scores['precision']:.1f}, recall {scores['recall']:.1f}"
        )
        buf = io.BytesIO()
        self.figure(ws["image"].value, method, threshold, cfg).savefig(buf, format="png", dpi=80)
        ws["out"].value = buf.getvalue()
        return scores

    def static_summary(self, threshold: float = 0.3, index: int = 0) -> Figure:
        """A static stand-in for the published book: every method on one image at one threshold."""
        img = to_hwc_uint8(self.samples[index]["img"])
        keys = self.label[index].nonzero().flatten()
        row, titles = [img, colorize(self.samples[index]["mask"])], [self.names[index], "ground truth"]
        for method in METHODS:
            maps = self.maps(method)
            cam = maps[index, keys].numpy()
            s = self.score(maps, threshold)
            row.append(overlay_cam(img, cam.max(0) if len(cam) else np.zeros(img.shape[:2])))
            titles.append(f"{method}: mIoU {s['miou']:.1f}")
        return plot_image_grid([row], [titles], size=2.4)
