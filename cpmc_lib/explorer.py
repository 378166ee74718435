"""An interactive explorer of the CAM methods and CPMC's calibration settings.

Two front ends share one cache: :meth:`Explorer.widget` is the live ipywidgets explorer for
JupyterLab; :meth:`Explorer.html` precomputes a small grid of settings (images x map x threshold x
FN/FP switches) into one self-contained HTML page fragment with inline JavaScript and base64 PNGs,
so a reader of the published HTML book turns the knobs without a kernel (and without any file
from the network).

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

import base64
import html as html_lib
import io
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from .cam_methods import OURS, make_cam_method, normalize_cams
from .config import Config
from .datasets import build_dataset
from .metrics import CamEvaluator, cam_to_mask, confusion_matrix, iou_from_confusion
from .models import load_classifier
from .plots import colorize, overlay_cam, plot_image_grid, to_hwc_uint8
from .store import RunStore
from .transforms import eval_transform

__all__ = ["METHODS", "SETTINGS", "SWITCHES", "Explorer", "png_base64"]

METHODS = OURS  # the maps the explorer recomputes: this book's, not the peers'

# The FN / FP switches of the kernel-free explorer: name -> settings (they change the "cpmc" map only).
SWITCHES = {
    "FN + FP": {},
    "FN only": {"use_fp": False},
    "FP only": {"use_fn": False},
    "neither": {"use_fn": False, "use_fp": False},
}


def png_base64(rgb: np.ndarray) -> str:
    """An (H, W, 3) uint8 image as a ``data:image/png;base64,...`` URL."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")

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
    "fn_radius": "calibration.fn_radius",
    "gate": "calibration.gate",
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
        self.class_names = list(raw.class_names)  # the masks' colours follow them (plots.mask_palette)
        self.img = torch.stack([norm({"img": s["img"]})["img"] for s in self.samples])
        self.label = torch.stack([s["label"] for s in self.samples])
        with torch.no_grad():
            self.out = self.model(self.img)  # the one forward pass
        self._widgets: dict[str, Any] = {}
        # cpmc_maps per CPMC settings (the run's own kept, plus the latest other) and ablation rows
        self._steps: dict[str, dict[str, torch.Tensor]] = {}
        self._rows: dict[tuple[str, str, int], dict[str, Any]] = {}

    @staticmethod
    def _key(cfg: Config) -> str:
        """The settings :func:`cpmc_lib.cpmc.cpmc_maps` reads, as a cache key."""
        d = cfg.to_dict()
        return json.dumps({k: d[k] for k in ("refinement", "prototypes", "calibration")}, sort_keys=True)

    def output(self, index: int) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
        """The cached network output, label and image of one image, as a batch of one.

        Returns:
            ``(out, label, img)``: the forward pass's dict sliced to ``[index : index + 1]`` (lists of
            stage tensors sliced each), (1, K-1) label and (1, 3, H, W) normalised image.
        """
        sl = slice(index, index + 1)
        out = {k: (v[sl] if torch.is_tensor(v) else [t[sl] for t in v] if isinstance(v, (list, tuple)) else v)
               for k, v in self.out.items()}  # fmt: skip
        return out, self.label[sl], self.img[sl]

    def teaching_index(self, min_cells: int = 4) -> int:
        """The image chapters 3 to 7 follow through the method, by a stated rule.

        Of the cached images in split order, the first that shows everything the method is about:
        two or more classes (so that the pseudo labels' class assignment has a choice to make), FN and
        FP regions of at least ``min_cells`` CAM-grid cells each (a local prototype averages more than
        one cell), a body the classifier CAM misses (object-body pixels it leaves as background when
        cut at its own Otsu threshold), class context and a distractor in the diagnostic mask; else
        the first meeting most of these six. The rule reads the synthetic benchmark's diagnostic
        masks (where they exist) to pick an illustration, never a setting.
        """
        from .labels import otsu_threshold
        from .synth import BODY, CONTEXT_PRESENT, DISTRACTOR

        steps, cam = self.steps(), self.maps("cam")
        scores = []
        for i, sample in enumerate(self.samples):
            keys = self.label[i].nonzero().flatten()
            sizes = [int(steps[r][i, 1:].flatten(1).sum(1).max()) for r in ("fn", "fp")]
            met = [len(keys) >= 2] + [n >= min_cells for n in sizes]
            if "diag" in sample and len(keys):
                diag = np.asarray(sample["diag"])
                cut = otsu_threshold(cam[i, keys].amax(0).numpy())
                missed = (diag == BODY) & (self.mask(cam, i, cut) == 0)
                met += [bool(missed.any()), bool((diag == CONTEXT_PRESENT).any()), bool((diag == DISTRACTOR).any())]
            scores.append(sum(met))
        return int(np.argmax(scores))  # the first of the highest

    def mask(self, maps: torch.Tensor, index: int, threshold: float) -> np.ndarray:
        """Image ``index``'s mask at a background threshold: (H, W) class ids (IRN's rule)."""
        keys = self.label[index].nonzero().flatten()
        return cam_to_mask(maps[index, keys].numpy(), (keys + 1).tolist(), threshold).numpy()

    def settings(self, **values: Any) -> Config:
        """The config with explorer settings applied (``iterations``, ``use_fn``, ``use_fp``,
        ``ref_bg_factor``, ``proto_bg_factor``, ``pairing``, ``detached``, ``fp_radius``, ``fn_radius``,
        ``gate``)."""
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

        Computed once per setting: the run's own settings are kept, and the latest other one, so
        ``refined``, ``proto`` and ``cpmc`` of :meth:`maps` and :meth:`region_stats` share one call.

        Returns:
            :func:`cpmc_lib.cpmc.cpmc_maps`'s dict: (N, K, h, w) maps ``cam``, ``refined``, ``proto``,
            ``cpmc`` and bool masks ``seeds``, ``fn``, ``fp`` (background at channel 0).
        """
        from .cpmc import cpmc_maps

        c = cfg or self.cfg
        key, own = self._key(c), self._key(self.cfg)
        if key not in self._steps:
            for k in [k for k in self._steps if k != own]:  # one other setting at a time (memory)
                del self._steps[k]
            self._steps[key] = cpmc_maps(self.out, self.label, c.refinement, c.prototypes, c.calibration, self.img)
        return self._steps[key]

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
        if hasattr(m, "from_steps"):  # a CPMC map: from the shared cpmc_maps call
            raw = m.from_steps(self.steps(cfg))
        else:
            raw = m.from_output(self.out, self.img, self.label)
        up = F.interpolate(raw.float(), size=self.img.shape[-2:], mode="bilinear", align_corners=False)
        return normalize_cams(up, self.label)

    def score(
        self, maps: torch.Tensor, threshold: float | None = None, indices: Sequence[int] | None = None
    ) -> dict[str, float]:
        """mIoU, precision and recall of ``maps`` over the cached images (or those at ``indices``).

        Args:
            maps: (N, K-1, H, W) normalised foreground maps (:meth:`maps`).
            threshold: background threshold; None sweeps it (``cams.thresholds_step``) and reports
                the best, with its ``threshold``, as the chapters' tables do (chosen against the
                ground truth: an oracle threshold).
            indices: a subset of the cached images (all when None).
        """
        thresholds = None if threshold is None else [threshold]
        ev = CamEvaluator(
            self.cfg.data.num_classes, thresholds=thresholds, step=self.cfg.cams.thresholds_step
        )
        for i in range(len(maps)) if indices is None else indices:
            keys = self.label[i].nonzero().flatten()
            ev.update(maps[i, keys], (keys + 1).tolist(), self.samples[i]["mask"])
        r = ev.compute()
        return {k: r[k] for k in ("miou", "precision", "recall", "threshold")}

    def image_scores(self, maps: torch.Tensor, threshold: float) -> list[dict[str, float]]:
        """Per cached image at one threshold: ``miou`` (over background and the classes in its
        ground truth or its mask), ``object_recall`` (% of object pixels given their class) and
        ``background_fp`` (% of background pixels called object). Ignore pixels (255) are skipped."""
        out = []
        for i in range(len(maps)):
            conf = confusion_matrix(self.mask(maps, i, threshold), self.samples[i]["mask"], maps.shape[1] + 1)
            scores = iou_from_confusion(conf)  # recall: object pixels given their class
            bg = conf[0].sum().item()
            fp = 100.0 * conf[0, 1:].sum().item() / bg if bg else float("nan")
            out.append({"miou": scores["miou"], "object_recall": scores["recall"], "background_fp": fp})
        return out

    def ablation(self, variants: dict[str, tuple[str, dict[str, Any]]], folds: int = 0) -> list[dict[str, Any]]:
        """Score named variants ``{row: (method, settings)}`` at their best thresholds, in order.

        Args:
            variants: row name -> (method, explorer settings or ``section.key`` overrides), e.g.
                the book's ablation, :func:`cpmc_lib.sweep.ablation_rows`.
            folds: when > 1, also score each variant, at its best threshold, on ``folds`` disjoint
                interleaved subsets of the cached images (``miou_folds``): the spread of a difference.

        Example:
            >>> ex.ablation({"classifier CAM": ("cam", {}), "+ FP only": ("cpmc", {"use_fn": False})})  # doctest: +SKIP
        """
        rows = []
        for name, (method, settings) in variants.items():
            cfg = self.settings(**settings)
            key = (method, self._key(cfg), folds)  # a variant scored before (e.g. the default) is reused
            if key not in self._rows:
                maps = self.maps(method, cfg)
                row = {"map": method, **self.score(maps)}
                if folds > 1:
                    row["miou_folds"] = [
                        self.score(maps, row["threshold"], range(f, len(maps), folds))["miou"] for f in range(folds)
                    ]
                self._rows[key] = row
            rows.append({"variant": name, **self._rows[key]})
        return rows

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
                    colorize(self.samples[index]["mask"], self.class_names),
                    overlay_cam(img, heat),
                    colorize(np.asarray(pred), self.class_names),
                ]
            ],
            [[self.names[index], "ground truth", method, f"mask @ {threshold:.2f}"]],
            colorbar="map value",
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

    def static_summary(self, threshold: float | None = None, index: int = 0) -> Figure:
        """A static stand-in for the published book: every method on one image, each titled with its
        mIoU over the cached images at ``threshold``, or (None) at its own best threshold, read
        against the ground truth (an oracle view, as the chapters' tables; the title gives it)."""
        img = to_hwc_uint8(self.samples[index]["img"])
        keys = self.label[index].nonzero().flatten()
        row, titles = [img, colorize(self.samples[index]["mask"], self.class_names)], [self.names[index], "ground truth"]
        for method in METHODS:
            maps = self.maps(method)
            cam = maps[index, keys].numpy()
            s = self.score(maps, threshold)
            row.append(overlay_cam(img, cam.max(0) if len(cam) else np.zeros(img.shape[:2])))
            titles.append(f"{method}: mIoU {s['miou']:.1f} @ {s['threshold']:.2f}")
        return plot_image_grid([row], [titles], colorbar="map value (max over the image's classes)")

    def grid(
        self,
        images: Sequence[int] = (0, 1, 2, 3),
        thresholds: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6),
        switches: dict[str, dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Precompute what the kernel-free explorer shows, for every combination of its settings.

        Args:
            images: cached image indices offered by the image control.
            thresholds: background thresholds offered by the threshold slider.
            switches: FN/FP settings offered for the "cpmc" map (default :data:`SWITCHES`).

        Returns:
            dict with ``images`` (name, image and ground-truth PNG URLs), ``methods``, ``thresholds``,
            ``switches``, ``heat[method|switch][image]`` (overlay PNG URL), ``mask[method|switch][image][t]``
            (mask PNG URL) and ``score[method|switch][t]`` (mIoU, precision, recall over all cached images).
        """
        switches = SWITCHES if switches is None else switches
        variants = {f"{m}|": (m, {}) for m in METHODS if m != "cpmc"}
        variants |= {f"cpmc|{name}": ("cpmc", sw) for name, sw in switches.items()}
        data: dict[str, Any] = {
            "images": [
                {"name": self.names[i], "img": png_base64(to_hwc_uint8(self.samples[i]["img"])),
                 "gt": png_base64(colorize(self.samples[i]["mask"], self.class_names))}  # fmt: skip
                for i in images
            ],
            "methods": list(METHODS),
            "thresholds": [float(t) for t in thresholds],
            "switches": list(switches),
            "heat": {},
            "mask": {},
            "score": {},
        }
        for key, (method, settings) in variants.items():
            maps = self.maps(method, self.settings(**settings))
            data["score"][key] = [
                # NaN (no pixel predicted, say) as None: JSON has no NaN, and the page prints a dash
                {k: None if math.isnan(v) else round(v, 1) for k, v in self.score(maps, t).items() if k != "threshold"}
                for t in thresholds
            ]
            data["heat"][key], data["mask"][key] = [], []
            for i in images:
                keys = self.label[i].nonzero().flatten()
                cam = maps[i, keys].numpy()
                img = to_hwc_uint8(self.samples[i]["img"])
                heat = cam.max(0) if len(cam) else np.zeros(img.shape[:2], np.float32)
                data["heat"][key].append(png_base64(overlay_cam(img, heat)))
                data["mask"][key].append(
                    [png_base64(colorize(np.asarray(cam_to_mask(cam, (keys + 1).tolist(), t)), self.class_names))
                     for t in thresholds]
                )
        return data

    def html(self, data: dict[str, Any] | None = None, uid: str = "cpmc-explorer", class_names=None) -> str:
        """The kernel-free explorer: one HTML fragment, inline JavaScript, no external file.

        Args:
            data: :meth:`grid`'s dict (computed with its defaults when None).
            uid: element id prefix (unique per page).
            class_names: K class names for the colour legend (the dataset's by default).

        Returns:
            HTML text for ``IPython.display.HTML``; the controls set the image, the map, the background
            threshold and the FN / FP switches, and the drawing and the scores follow.
        """
        data = self.grid() if data is None else data
        names = class_names or self.class_names
        pal = colorize(np.arange(len(names)), names)
        legend = "".join(
            f'<span style="display:inline-block;margin-right:.6em"><span style="display:inline-block;width:.9em;'
            f'height:.9em;background:rgb{tuple(int(v) for v in pal[k])};border:1px solid #888;vertical-align:middle">'
            f"</span> {html_lib.escape(str(n))}</span>"
            for k, n in enumerate(names)
        )
        images = "".join(f'<option value="{i}">{html_lib.escape(d["name"])}</option>' for i, d in enumerate(data["images"]))
        methods = "".join(
            f'<label style="margin-right:.8em"><input type="radio" name="{uid}-method" value="{m}"'
            f'{" checked" if m == "cpmc" else ""}> {m}</label>'
            for m in data["methods"]
        )
        switches = "".join(f'<option value="{s}">{html_lib.escape(s)}</option>' for s in data["switches"])
        nt = len(data["thresholds"])
        # each map opens at its own best offered threshold (an oracle view, as the chapters' tables)
        first = data["score"][f"cpmc|{data['switches'][0]}"]
        t0 = max(range(nt), key=lambda i: first[i]["miou"])
        panel = 'style="width:100%;max-width:320px;image-rendering:auto;display:block"'
        cells = "".join(
            f'<figure style="margin:0;flex:1 1 40%;min-width:220px"><img id="{uid}-{k}" {panel} alt="{k}">'
            f'<figcaption id="{uid}-{k}-cap" style="font-size:.85em">{cap}</figcaption></figure>'
            for k, cap in (("img", "image"), ("gt", "ground truth"), ("heat", "map"), ("mask", "mask"))
        )
        payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
        return f"""<div id="{uid}" class="cpmc-explorer" data-cpmc-explorer="1"
 style="border:1px solid #ccc;border-radius:6px;padding:.8em;font-size:.95em">
<div style="display:flex;flex-wrap:wrap;gap:.6em 1.6em;align-items:center">
<label>image <select id="{uid}-image">{images}</select></label>
<span>map {methods}</span>
<label>background threshold <input id="{uid}-threshold" type="range" min="0" max="{nt - 1}" step="1" value="{t0}">
<output id="{uid}-tval"></output></label>
<label>local prototypes (cpmc) <select id="{uid}-switch">{switches}</select></label>
</div>
<div style="display:flex;flex-wrap:wrap;gap:.5em;margin-top:.6em">{cells}</div>
<div style="margin-top:.4em;font-size:.85em">map colours: blue 0 to red 1 (jet). Classes: {legend}</div>
<p id="{uid}-score" style="margin:.5em 0 0 0"></p>
<script type="application/json" id="{uid}-data">{payload}</script>
{_script(uid, len(self.names))}</div>"""


# The kernel-free explorer's behaviour: redraw on every control, each map opening at its own best
# offered threshold. __UID__ and __N__ are filled in by :func:`_script`.
_SCRIPT = """<script>
(function () {
  var uid = "__UID__", root = document.getElementById(uid);
  var D = JSON.parse(document.getElementById(uid + "-data").textContent);
  function el(k) { return document.getElementById(uid + "-" + k); }
  function draw() {
    var i = +el("image").value, t = +el("threshold").value;
    var m = root.querySelector('input[name="' + uid + '-method"]:checked').value;
    var sw = el("switch").value, key = m + "|" + (m === "cpmc" ? sw : "");
    el("switch").disabled = m !== "cpmc";
    el("img").src = D.images[i].img; el("gt").src = D.images[i].gt;
    el("heat").src = D.heat[key][i]; el("mask").src = D.mask[key][i][t];
    var th = D.thresholds[t].toFixed(2);
    el("tval").textContent = th;
    el("heat-cap").textContent = m + (m === "cpmc" ? " (" + sw + ")" : "") + " map";
    el("mask-cap").textContent = "mask at threshold " + th;
    var s = D.score[key][t];
    el("score").innerHTML = "<b>" + m + (m === "cpmc" ? " (" + sw + ")" : "") + "</b> at threshold " + th +
      " over the " + __N__ + " cached images: mIoU <b>" + num(s.miou) + "</b>, precision " +
      num(s.precision) + ", recall " + num(s.recall) + "; its best offered threshold, read against the " +
      "ground truth (an oracle view): " + D.thresholds[best(key)].toFixed(2) + " (" + num(D.score[key][best(key)].miou) + ")";
    root.setAttribute("data-state", key + "@" + th + "#" + i);
  }
  function num(x) { return x === null ? "\\u2013" : x.toFixed(1); }
  function best(key) {
    var b = 0, s = D.score[key];
    for (var j = 1; j < s.length; j++) if (s[j].miou !== null && !(s[j].miou <= s[b].miou)) b = j;
    return b;
  }
  root.querySelectorAll('input[name="' + uid + '-method"]').forEach(function (r) {
    r.addEventListener("change", function () {  // a new map opens at its own best threshold
      el("threshold").value = best(r.value + "|" + (r.value === "cpmc" ? el("switch").value : ""));
    });
  });
  root.addEventListener("input", draw);
  root.addEventListener("change", draw);
  draw();
})();
</script>
"""


def _script(uid: str, n_images: int) -> str:
    """The inline script of one kernel-free explorer (:meth:`Explorer.html`) with element prefix ``uid``."""
    return _SCRIPT.replace("__UID__", uid).replace("__N__", str(n_images))
