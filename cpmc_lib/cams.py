"""Stage "cams": class activation maps of the trained classifier, saved per image and scored.

The design follows torch-cam: :class:`CamMethod` owns what every method shares - multi-scale and
horizontal-flip fusion, upsampling to the image size, and per-class max-normalisation over the
classes of the image label - and a method implements one small function:

- methods that read the network's output dict subclass :class:`OutputCam` and implement
  ``from_output(out, img, label) -> (B, K-1, h, w)`` non-negative maps (e.g. "cam":
  ``ReLU(out["cam"])``; later "refined", "proto", "cpmc");
- peer baselines from pytorch-grad-cam ("gradcam", "gradcampp", "layercam") subclass
  :class:`GradCamMethod`, which wraps the library's class on the classifier's last stage.

Fusion (IRN's ``make_cam``): for each scale s, the image is resized by s and run as the batch
``[img, hflip(img)]``; the flipped map is flipped back and added; every scale's map is resized
bilinearly to the image size and summed; finally ``cam_c / (max cam_c + 1e-5)`` per present
class, absent classes set to 0.

Methods are registered by name in :data:`CAM_METHODS`, either as a class or as a
``"module:Class"`` string resolved on use (so modules written later can register a method
without an import cycle). :func:`make_cam_method` builds one from a config.

Outputs in ``runs/<run>/cams/<method>/``: ``<name>.npy`` per image (IRN style, a pickled dict
``{"keys": (k,) int64 class ids in 1..K-1, "cam": (k, H, W) float16}`` of the present classes;
read it with :func:`load_cams`) and ``metrics.json``. All methods share the one "cams" stage of
the run store (its hash covers every CAM-related config section); each method lives in its own
sub-folder and a method whose ``metrics.json`` exists there is reused, not recomputed.

Example:
    >>> result = run(cfg, method="cam")  # doctest: +SKIP
    >>> result["miou"], result["threshold"]  # doctest: +SKIP
    (44.1, 0.3)
"""

from __future__ import annotations

import importlib
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torch.utils.data import DataLoader

from . import classifier, distributed
from .config import Config
from .datasets import build_dataset, collate
from .diagnostics import PathologyMeter
from .io import atomic_write, load_json, save_json
from .metrics import CamEvaluator
from .models import CamNet, load_classifier
from .progress import tqdm
from .runtime import pick_device
from .store import RunStore
from .transforms import eval_transform

__all__ = [
    "CAM_METHODS",
    "CamMethod",
    "ClassifierCam",
    "GradCamMethod",
    "GradCamPlusPlusMethod",
    "JOINT_METHODS",
    "JointCam",
    "JointGradCam",
    "LayerCamMethod",
    "OutputCam",
    "benchmark_calibration",
    "cached_metrics",
    "compare_failures",
    "evaluate_cams",
    "explain",
    "joint_group",
    "load_cams",
    "make_cam_method",
    "make_joint_method",
    "multiscale_flip",
    "normalize_cams",
    "run",
    "save_cams",
]


def multiscale_flip(
    compute: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    img: torch.Tensor,
    label: torch.Tensor,
    scales: tuple[float, ...] = (1.0,),
    flip: bool = True,
) -> torch.Tensor:
    """Sum of ``compute``'s maps over scales and flips, at image size (IRN's high-res CAM).

    Args:
        compute: ``(img (N, 3, h, w), label (N, K-1)) -> (N, K-1, h', w')`` non-negative maps.
        img: (B, 3, H, W) normalised images.
        label: (B, K-1) multi-hot labels.
        scales: resize factors of the image.
        flip: also run the horizontally flipped image and add its map, flipped back.

    Returns:
        (B, K-1, H, W) summed maps (not normalised).
    """
    B, _, H, W = img.shape
    total = None
    for s in scales:
        x = img if s == 1.0 else F.interpolate(img, scale_factor=s, mode="bilinear", align_corners=False)
        y = label
        if flip:
            x, y = torch.cat([x, x.flip(-1)]), torch.cat([label, label])
        m = compute(x, y)
        if flip:
            m = m[:B] + m[B:].flip(-1)
        m = F.interpolate(m.float(), size=(H, W), mode="bilinear", align_corners=False)
        total = m if total is None else total + m
    return total


def normalize_cams(cams: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Per-class max-normalisation over the present classes; absent classes are zeroed.

    Args:
        cams: (B, K-1, H, W) non-negative maps.
        label: (B, K-1) multi-hot labels.

    Returns:
        (B, K-1, H, W): ``cam_c / (max cam_c + 1e-5)`` where ``label_c = 1``, else 0.
    """
    cams = cams.clamp(min=0) * label[:, :, None, None].to(cams.dtype)
    return cams / (cams.amax(dim=(2, 3), keepdim=True) + 1e-5)


class CamMethod:
    """Base of every CAM method: multi-scale + flip fusion, resizing and normalisation.

    Subclasses implement :meth:`compute`. Calling the method gives normalised maps.

    Args:
        model: the trained classifier (already on its device).
        scales: image resize factors (``cams.scales``).
        flip: add the horizontally flipped image (``cams.flip``).
    """

    def __init__(self, model: CamNet, scales: tuple[float, ...] = (1.0,), flip: bool = True) -> None:
        self.model = model
        self.scales = tuple(scales)
        self.flip = flip

    @classmethod
    def from_config(cls, model: CamNet, cfg: Config, **kwargs: Any) -> CamMethod:
        """Build from ``cfg.cams`` (subclasses with more settings read their own sections)."""
        return cls(model, scales=cfg.cams.scales, flip=cfg.cams.flip, **kwargs)

    def compute(self, img: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Non-negative maps of one scale: (N, 3, h, w), (N, K-1) -> (N, K-1, h', w')."""
        raise NotImplementedError

    def __call__(self, img: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Normalised maps: (B, 3, H, W), (B, K-1) -> (B, K-1, H, W), each present class max 1."""
        self.model.eval()
        return normalize_cams(multiscale_flip(self.compute, img, label, self.scales, self.flip), label)


class OutputCam(CamMethod):
    """A method computed from the network's output dict; implement :meth:`from_output`."""

    def from_output(self, out: dict[str, Any], img: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """(output dict of :class:`CamNet`, (N, 3, h, w), (N, K-1)) -> (N, K-1, h', w') maps >= 0."""
        raise NotImplementedError

    @torch.no_grad()
    def compute(self, img: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.from_output(self.model(img), img, label)


class ClassifierCam(OutputCam):
    """The classifier CAM of IRN: ``ReLU(W^T feat)``, the head's per-pixel class scores."""

    def from_output(self, out: dict[str, Any], img: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return F.relu(out["cam"].float())


class _Logits(nn.Module):
    """The classifier as pytorch-grad-cam expects it: images in, (N, K-1) logits out."""

    def __init__(self, model: CamNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["logits"]


@contextmanager
def _gradients_from(model: CamNet, layer: nn.Module) -> Iterator[None]:
    """Let autograd start at ``layer``: the parameters below it stop requiring gradients.

    The explainers need the gradient of the logits at ``layer``'s output only; without this the
    backward pass also ran through the stem and early stages for their weight gradients (about
    half its cost), which nothing reads.
    """
    keep = {id(p) for p in layer.parameters()}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in keep]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def explain(model: CamNet, cam_classes: Sequence[type], img: torch.Tensor, label: torch.Tensor) -> list[torch.Tensor]:
    """Maps of several pytorch-grad-cam explainers from **one** forward and backward pass.

    Grad-CAM, Grad-CAM++ and LayerCAM differ only in how they weigh the target layer's
    activations by its gradients. Every explainer's hooks record the same pass (made by the
    first), then each applies its own weighting (``compute_cam_per_layer``).

    Args:
        model: the classifier; the target layer is its last stage.
        cam_classes: pytorch-grad-cam classes, e.g. ``(GradCAM, LayerCAM)``.
        img: (N, 3, h, w) images.
        label: (N, K-1) multi-hot labels; only the (image, present class) pairs are explained.

    Returns:
        One (N, K-1, h, w) tensor per class, each map min-max scaled to [0, 1] by the library;
        absent classes 0.
    """
    N, K1 = label.shape
    outs = [torch.zeros(N, K1, *img.shape[-2:], device=img.device) for _ in cam_classes]
    pairs = label.nonzero().tolist()
    if not pairs:
        return outs
    x = img[[i for i, _ in pairs]]  # one row per (image, present class) pair
    targets = [ClassifierOutputTarget(k) for _, k in pairs]
    layer = model.last_stage
    # enable_grad: the backward pass must work even when the caller runs under torch.no_grad.
    with torch.enable_grad(), _gradients_from(model, layer), ExitStack() as stack:
        explainers = [stack.enter_context(c(model=_Logits(model), target_layers=[layer])) for c in cam_classes]
        first, *rest = explainers
        maps = [first(input_tensor=x, targets=targets)]  # (P, h, w) numpy in [0, 1]
        maps += [e.aggregate_multi_layers(e.compute_cam_per_layer(x, targets, False)) for e in rest]
    rows, cols = zip(*pairs, strict=True)
    for out, m in zip(outs, maps, strict=True):
        out[list(rows), list(cols)] = torch.from_numpy(m).to(out)
    return outs


class GradCamMethod(CamMethod):
    """Grad-CAM (Selvaraju et al. 2017) from pytorch-grad-cam on the last backbone stage.

    Only the (image, present class) pairs are explained (:func:`explain`). pytorch-grad-cam
    returns every map resized to the input and min-max scaled to [0, 1]; the base class then
    fuses and normalises as for "cam".
    """

    cam_class: type = GradCAM

    def compute(self, img: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return explain(self.model, [self.cam_class], img, label)[0]


class GradCamPlusPlusMethod(GradCamMethod):
    """Grad-CAM++ (Chattopadhay et al. 2018) from pytorch-grad-cam."""

    cam_class = GradCAMPlusPlus


class LayerCamMethod(GradCamMethod):
    """LayerCAM (Jiang et al. 2021) from pytorch-grad-cam."""

    cam_class = LayerCAM


class JointCam(CamMethod):
    """Several methods of one group (:data:`JOINT_METHODS`) made in one pass.

    Subclasses compute ``(N, M * (K-1), h, w)``: the M maps of ``parts`` side by side. Calling it
    gives (B, M, K-1, H, W): each map fused over scales and flips and normalised exactly as its
    own method would be.
    """

    group: tuple[str, ...] = ()

    def __init__(self, model: CamNet, scales=(1.0,), flip: bool = True, parts: Sequence[str] | None = None):
        super().__init__(model, scales, flip)
        self.parts = tuple(parts or self.group)
        unknown = set(self.parts) - set(self.group)
        if unknown or not self.parts:
            raise ValueError(f"{type(self).__name__} parts must be among {', '.join(self.group)}; got {parts}")

    def __call__(self, img: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        fused = multiscale_flip(self.compute, img, label, self.scales, self.flip)
        B, _, H, W = fused.shape
        fused = fused.view(B, len(self.parts), -1, H, W)
        return torch.stack([normalize_cams(fused[:, i], label) for i in range(len(self.parts))], dim=1)


class JointGradCam(JointCam):
    """Grad-CAM, Grad-CAM++ and LayerCAM from one forward and backward pass (:func:`explain`)."""

    group = ("gradcam", "gradcampp", "layercam")

    def compute(self, img: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        classes = [CAM_METHODS[p].cam_class for p in self.parts]
        return torch.cat(explain(self.model, classes, img, label), dim=1)


# Name -> method class, or "module:Class" for methods defined in modules that import this one.
CAM_METHODS: dict[str, type[CamMethod] | str] = {
    "cam": ClassifierCam,
    "gradcam": GradCamMethod,
    "gradcampp": GradCamPlusPlusMethod,
    "layercam": LayerCamMethod,
    "refined": "cpmc_lib.cpmc:RefinedCam",
    "proto": "cpmc_lib.cpmc:PrototypeCam",
    "cpmc": "cpmc_lib.cpmc:CpmcCam",
}


# Groups of methods made from one pass (the intermediates of cpmc_lib.cpmc.cpmc_maps; the
# gradient explainers, which share a forward and backward pass): whichever members of a group a
# run lacks are made together. Group -> its JointCam class (or "module:Class").
JOINT_METHODS: dict[tuple[str, ...], type[JointCam] | str] = {
    ("refined", "proto", "cpmc"): "cpmc_lib.cpmc:JointCpmcCam",
    JointGradCam.group: JointGradCam,
}


def _resolve(cls: type | str) -> type:
    if isinstance(cls, str):
        module, _, attr = cls.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    return cls


def joint_group(method: str) -> tuple[str, ...]:
    """The group of :data:`JOINT_METHODS` that ``method`` belongs to (``(method,)`` if none)."""
    return next((g for g in JOINT_METHODS if method in g), (method,))


def make_joint_method(parts: Sequence[str], model: CamNet, cfg: Config) -> JointCam:
    """The :class:`JointCam` that makes ``parts`` (members of one group) in one pass."""
    group = joint_group(parts[0])
    return _resolve(JOINT_METHODS[group]).from_config(model, cfg, parts=tuple(parts))


def make_cam_method(name: str, model: CamNet, cfg: Config) -> CamMethod:
    """The method registered as ``name`` in :data:`CAM_METHODS`, built from ``cfg``."""
    if name not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {name!r}; methods: {', '.join(CAM_METHODS)}")
    return _resolve(CAM_METHODS[name]).from_config(model, cfg)


def _save_npy(path: Path, obj: dict[str, np.ndarray]) -> None:
    with atomic_write(path, "wb") as f:
        np.save(f, obj, allow_pickle=True)


def load_cams(store_path: str | Path, method: str, name: str) -> dict[str, np.ndarray]:
    """One image's saved maps: ``{"keys": (k,) class ids, "cam": (k, H, W) float16}``.

    Args:
        store_path: the run folder (``RunStore.root``) or the "cams" stage folder.
    """
    root = Path(store_path)
    if (root / "cams").is_dir():
        root = root / "cams"
    path = root / method / f"{name}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the cams stage with method={method!r}")
    return np.load(path, allow_pickle=True).item()


def save_cams(
    method: CamMethod,
    dataset,
    out: str | Path | dict[str, Path],
    device: torch.device,
    batch_size: int = 32,
    progress: bool = True,
) -> int:
    """Compute ``method``'s maps for every image of ``dataset`` and save them in ``out``.

    ``out`` is one folder, or for a method that makes several maps in one pass
    (:class:`cpmc_lib.cpmc.JointCpmcCam`, whose call gives (B, M, K-1, H, W)) a dict of M folders
    in the order of its maps. Images of equal size are batched; different sizes (VOC) run one at a
    time. Returns the count.
    """
    folders = list(out.values()) if isinstance(out, dict) else [Path(out)]
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    n = 0
    desc = "cams " + "+".join(f.name for f in folders)
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        imgs, labels = batch["img"], batch["label"]
        if isinstance(imgs, list):  # sizes differ: one image at a time
            cams = [
                method(x[None].to(device), y[None].to(device))[0].cpu()
                for x, y in zip(imgs, labels, strict=True)
            ]
        else:
            cams = method(imgs.to(device), labels.to(device)).cpu()
        for name, cam, label in zip(batch["name"], cams, labels, strict=True):
            keys = label.nonzero().flatten()
            parts = cam if cam.dim() == 4 else cam[None]  # (M, K-1, H, W)
            for folder, part in zip(folders, parts, strict=True):
                _save_npy(
                    folder / f"{name}.npy",
                    {"keys": (keys + 1).numpy(), "cam": part[keys].numpy().astype(np.float16)},
                )
            n += 1
    return n


def evaluate_cams(folder: str | Path, dataset, num_classes: int, step: float = 0.05) -> dict[str, Any]:
    """Score saved maps: best-threshold mIoU (threshold sweep) and, with diagnostics, pathologies.

    Args:
        folder: the method's folder of ``<name>.npy`` files.
        dataset: the split's dataset (its ``mask`` and, if present, ``diag`` are used).

    Returns:
        :meth:`~cpmc_lib.metrics.CamEvaluator.compute`'s dict, plus ``pathology``
        (:meth:`~cpmc_lib.diagnostics.PathologyMeter.compute` at the best threshold) when the
        dataset has diagnostic masks.
    """
    folder = Path(folder)
    evaluator = CamEvaluator(num_classes, step=step)
    for i, name in enumerate(dataset.names):
        saved = np.load(folder / f"{name}.npy", allow_pickle=True).item()
        try:
            evaluator.update(saved["cam"].astype(np.float32), saved["keys"], dataset[i]["mask"])
        except ValueError as e:  # name the image: e.g. NaN maps of a diverged classifier
            raise ValueError(f"{folder / name}.npy: {e}") from None
    metrics = evaluator.compute()
    if len(dataset) and "diag" in dataset[0]:
        meter = PathologyMeter(metrics["threshold"])
        for i, name in enumerate(dataset.names):
            saved, sample = np.load(folder / f"{name}.npy", allow_pickle=True).item(), dataset[i]
            meter.update(saved["cam"].astype(np.float32), saved["keys"], sample["mask"], sample["diag"])
        metrics["pathology"] = meter.compute()
    return metrics


def cached_metrics(cfg: Config, store: RunStore, method: str) -> dict[str, Any] | None:
    """The saved metrics of ``method``'s maps if they were made with ``cfg``'s settings, else None.

    The cams stage folder is shared by all methods (its hash covers data, classifier and CAM
    inference); each method's ``metrics.json`` records :meth:`~cpmc_lib.config.Config.method_hash`,
    which adds the sections that method reads, so changing a calibration setting recomputes only
    the "cpmc" maps.
    """
    path = store.path("cams") / method / "metrics.json"  # written last: present means complete
    if path.is_file():
        metrics = load_json(path)
        if metrics.get("method_hash") == cfg.method_hash(method):
            return metrics
    return None


def run(
    cfg: Config, store: RunStore | None = None, method: str = "cam", progress: bool = True
) -> dict[str, Any]:
    """Stage "cams" for one method: maps of every ``cfg.data.cam_split`` image, saved and scored.

    Trains the classifier first if its stage is not done. Reuses ``cams/<method>/metrics.json``
    if it exists in the stage folder for this config. Asked for one of :data:`JOINT_METHODS`, it
    also makes whichever of the others are missing, in the same pass (``made_with`` lists them).

    Returns:
        The metrics of :func:`evaluate_cams` plus ``method``, ``images``, ``seconds`` and ``folder``.
    """
    store = store or RunStore.for_config(cfg)
    device = pick_device(cfg.device)
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; methods: {', '.join(CAM_METHODS)}")
    classifier.run(cfg, store, progress=progress)
    # keep: other methods' folders survive a crash of this stage with the same config.
    # Under torchrun each rank maps its shard of the images (i % world == rank) into the shared
    # folder; rank 0 scores them all once every rank is done.
    with store.stage("cams", cfg, device=str(device), keep=tuple(CAM_METHODS)) as st:
        metrics = cached_metrics(cfg, store, method)
        todo = [method]
        if metrics is None:  # the missing members of its group come almost free (in the group's order)
            todo = [m for m in joint_group(method) if m == method or cached_metrics(cfg, store, m) is None]
        distributed.barrier()  # every rank has looked before rank 0 clears
        if metrics is None:
            start = time.perf_counter()
            folders = {m: st.path / m for m in todo}
            for folder in folders.values():
                if folder.exists() and distributed.is_main():  # maps of other settings: replace them
                    shutil.rmtree(folder)
            distributed.barrier()
            model = load_classifier(store.path("classifier") / "model.pt", cfg).to(device)
            dataset = distributed.shard_dataset(build_dataset(cfg, cfg.data.cam_split, eval_transform()))
            if len(todo) > 1:
                cam_method = make_joint_method(todo, model, cfg)
            else:
                cam_method = make_cam_method(method, model, cfg)
            n = save_cams(
                cam_method, dataset, folders if len(todo) > 1 else folders[method], device,
                cfg.cams.batch_size, progress and distributed.is_main(),
            )  # fmt: skip
            n = round(distributed.all_reduce_sum({"n": n})["n"])  # also waits for every rank's maps
            made = {}
            if distributed.is_main():
                raw = build_dataset(cfg, cfg.data.cam_split)  # masks only: skip the image normalisation
                for m, folder in folders.items():
                    made[m] = evaluate_cams(folder, raw, cfg.data.num_classes, cfg.cams.thresholds_step)
                # seconds: the whole pass and its scoring, the same for every method made in it
                seconds = round(time.perf_counter() - start, 1)
                for m, folder in folders.items():
                    made[m].update(
                        method=m, method_hash=cfg.method_hash(m), images=n, made_with=todo,
                        seconds=seconds, folder=str(folder),
                    )  # fmt: skip
                    save_json(folder / "metrics.json", made[m])
            made = distributed.broadcast_object(made)
            metrics = made[method]
        else:
            made = {method: metrics}
        if not st.done:
            st.result = {
                **st.result,
                **{
                    m: {k: r[k] for k in ("miou", "threshold", "precision", "recall")}
                    for m, r in made.items()
                },
            }
    return metrics


def compare_failures(store: RunStore, dataset, a: str = "cam", b: str = "proto") -> dict[str, float]:
    """The failures map ``b`` adds relative to map ``a``, over a split, each at its best threshold.

    The dataset card's "failure modes of prototype CAMs" (``a="cam"``, ``b="proto"``): ``fn`` is the
    percent of object pixels the classifier CAM labels right and the prototype CAM does not,
    ``fp`` the percent of background pixels the prototype CAM marks as object while the classifier
    CAM calls them background (:func:`cpmc_lib.diagnostics.fn_fp_fractions`, summed over images).
    """
    from .diagnostics import fn_fp_fractions
    from .metrics import cam_to_mask

    thr = {m: load_json(store.path("cams") / m / "metrics.json")["threshold"] for m in (a, b)}
    sums = {"n_fn": 0, "n_fp": 0, "n_object": 0, "n_background": 0}
    for name in dataset.names:
        masks = []
        for m in (a, b):
            saved = load_cams(store.root, m, name)
            masks.append(cam_to_mask(saved["cam"].astype(np.float32), saved["keys"], thr[m]))
        gt = dataset.read_mask(dataset.mask_path(name))
        r = fn_fp_fractions(masks[0], masks[1], gt)
        for k in sums:
            sums[k] += r[k]
    return {
        "fn": 100 * sums["n_fn"] / max(sums["n_object"], 1),
        "fp": 100 * sums["n_fp"] / max(sums["n_background"], 1),
        "thresholds": thr,
    }


def benchmark_calibration(cfg: Config, store: RunStore, progress: bool = True) -> dict[str, Any]:
    """What the dataset card records about the benchmark, measured with ``cfg``'s classifier.

    Classifier-CAM mIoU (best threshold), part and body recall, context and neutral activation, and
    the two failures of the prototype CAM relative to the classifier CAM (:func:`compare_failures`).
    """
    cam = run(cfg, store, method="cam", progress=progress)
    run(cfg, store, method="proto", progress=progress)
    p = cam["pathology"]
    fails = compare_failures(store, build_dataset(cfg, cfg.data.cam_split), "cam", "proto")
    return {
        "classifier": {"config_hash": cfg.stage_hash("classifier"), **store.result("classifier")},
        "cam_miou": cam["miou"],
        "cam_threshold": cam["threshold"],
        "recall_part": p["recall_part"],
        "recall_body": p["recall_body"],
        "act_context": p["act_context"],
        "act_neutral": p["act_neutral"],
        "proto_fn_of_cam_objects": fails["fn"],
        "proto_fp_on_cam_background": fails["fp"],
        "targets": "CAM mIoU about 35-55; part recall >= body recall + 15; context >= 1.5 x neutral activation",
    }
