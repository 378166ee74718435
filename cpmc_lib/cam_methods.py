"""CAM methods: the framework every map of the book goes through, and its registry.

The design follows torch-cam: :class:`CamMethod` owns what every method shares - multi-scale and
horizontal-flip fusion, upsampling to the image size, and per-class max-normalisation over the
classes of the image label - and a method implements one small function:

- methods that read the network's output dict subclass :class:`OutputCam` and implement
  ``from_output(out, img, label) -> (B, K-1, h, w)`` non-negative maps: "cam"
  (:class:`ClassifierCam`, ``ReLU(out["cam"])``) and the CPMC maps "refined", "proto", "cpmc"
  (:class:`RefinedCam`, :class:`PrototypeCam`, :class:`CpmcCam`, each one output of
  :func:`cpmc_lib.cpmc.cpmc_maps`);
- peer baselines from pytorch-grad-cam ("gradcam", "gradcampp", "layercam") subclass
  :class:`GradCamMethod`, which wraps the library's class on the classifier's last stage.

Fusion (IRN's ``make_cam``): for each scale s, the image is resized by s and run as the batch
``[img, hflip(img)]``; the flipped map is flipped back and added; every scale's map is resized
bilinearly to the image size and summed; finally ``cam_c / (max cam_c + 1e-5)`` per present
class, absent classes set to 0.

Methods made from one pass share it (:class:`JointCam`): the CPMC maps are intermediates of one
:func:`~cpmc_lib.cpmc.cpmc_maps` call (:class:`JointCpmcCam`), the Grad-CAM family shares one
forward and backward pass (:class:`JointGradCam`).

The stage that saves and scores the maps is :mod:`cpmc_lib.cams`. The CPMC maps' background
channel enters their foreground maps by ``prototypes.bg_mode``
(:func:`cpmc_lib.cpmc.foreground_maps`): that stage scores foreground maps only (IRN's threshold
sweep), and without it the FP prototypes, which only raise the background channel, could not
change the score.

Registries: :data:`CAM_METHODS` (name -> class) and :data:`JOINT_METHODS` (group -> class);
:func:`make_cam_method` and :func:`make_joint_method` build one from a config.

Example:
    >>> method = make_cam_method("cam", model, cfg)  # doctest: +SKIP
    >>> method(img, label).shape  # (B, K-1, H, W), each present class max 1  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from .cpmc import cpmc_maps, foreground_maps
from .models import CamNet

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "CAM_METHODS",
    "CamMethod",
    "ClassifierCam",
    "CpmcCam",
    "GradCamMethod",
    "GradCamPlusPlusMethod",
    "JOINT_METHODS",
    "JointCam",
    "JointCpmcCam",
    "JointGradCam",
    "LayerCamMethod",
    "OURS",
    "OutputCam",
    "PEERS",
    "PrototypeCam",
    "RefinedCam",
    "explain",
    "fuse_views",
    "joint_group",
    "make_cam_method",
    "make_joint_method",
    "multiscale_flip",
    "normalize_cams",
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
        m = fuse_views(compute(x, y), B, (H, W), flip)
        total = m if total is None else total + m
    return total


def fuse_views(maps: torch.Tensor, batch: int, size: tuple[int, int], flip: bool = True) -> torch.Tensor:
    """One scale's maps at image size: with ``flip``, the maps of ``[img, hflip(img)]`` (2B, C, h, w)
    with the flipped half flipped back and added; then resized bilinearly to ``size``.

    Returns:
        (B, C, H, W) float maps.
    """
    if flip:
        maps = maps[:batch] + maps[batch:].flip(-1)
    return F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)


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

    Class attributes (read by the run store's cache keys and the reports through :data:`CAM_METHODS`):
    ``title`` names the map in tables; ``sections`` are the config sections it reads beyond
    ``cams`` (a change there recomputes only this map); ``peer`` marks a baseline from another
    paper, compared in the oracle view only.

    Args:
        model: the trained classifier (already on its device).
        scales: image resize factors (``cams.scales``).
        flip: add the horizontally flipped image (``cams.flip``).
    """

    title: str = ""
    origin: str = ""  # where the map comes from, beside its numbers in every table
    sections: tuple[str, ...] = ()
    peer: bool = False

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

    title = "classifier CAM"
    origin = "CPMC step 1 (CAM)"

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


def explain(
    model: CamNet, cam_classes: Sequence[type], img: torch.Tensor, label: torch.Tensor
) -> list[torch.Tensor]:
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
    # Imported here, as in the methods below: pytorch-grad-cam pulls in scikit-learn and scipy,
    # seconds that every chapter importing cpmc_lib would otherwise pay.
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = img[[i for i, _ in pairs]]  # one row per (image, present class) pair
    targets = [ClassifierOutputTarget(k) for _, k in pairs]
    layer = model.last_stage
    # enable_grad: the backward pass must work even when the caller runs under torch.no_grad.
    with torch.enable_grad(), _gradients_from(model, layer), ExitStack() as stack:
        explainers = [
            stack.enter_context(c(model=_Logits(model), target_layers=[layer])) for c in cam_classes
        ]
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

    title = "Grad-CAM (peer)"
    origin = "peer, not CPMC"
    peer = True

    @staticmethod
    def cam_class() -> type:
        """The pytorch-grad-cam class (imported when first used)."""
        from pytorch_grad_cam import GradCAM

        return GradCAM

    def compute(self, img: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return explain(self.model, [self.cam_class()], img, label)[0]


class GradCamPlusPlusMethod(GradCamMethod):
    """Grad-CAM++ (Chattopadhay et al. 2018) from pytorch-grad-cam."""

    title = "Grad-CAM++ (peer)"

    @staticmethod
    def cam_class() -> type:
        from pytorch_grad_cam import GradCAMPlusPlus

        return GradCAMPlusPlus


class LayerCamMethod(GradCamMethod):
    """LayerCAM (Jiang et al. 2021) from pytorch-grad-cam."""

    title = "LayerCAM (peer)"

    @staticmethod
    def cam_class() -> type:
        from pytorch_grad_cam import LayerCAM

        return LayerCAM


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
            raise ValueError(
                f"{type(self).__name__} parts must be among {', '.join(self.group)}; got {parts}"
            )

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
        classes = [CAM_METHODS[p].cam_class() for p in self.parts]
        return torch.cat(explain(self.model, classes, img, label), dim=1)


# --- the CPMC maps -------------------------------------------------------------------------------


class _CpmcMethod(OutputCam):
    """Shared part of the CPMC CAM methods: run :func:`cpmc_maps`, return one map's foreground."""

    key = "cpmc"

    def __init__(self, model, cfg: Config, scales=(1.0,), flip=True) -> None:
        super().__init__(model, scales, flip)
        self.cfg = cfg

    @classmethod
    def from_config(cls, model, cfg: Config, **kwargs: Any) -> _CpmcMethod:
        return cls(model, cfg, scales=cfg.cams.scales, flip=cfg.cams.flip, **kwargs)

    def _maps(self, out: dict[str, Any], img: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.cfg
        return cpmc_maps(out, label, c.refinement, c.prototypes, c.calibration, img)

    def _foreground(self, maps: dict[str, torch.Tensor], key: str) -> torch.Tensor:
        if key == "refined":  # the classifier CAM's own background 1 - max stays out (IRN)
            return maps["refined"][:, 1:]
        return foreground_maps(maps[key], self.cfg.prototypes.bg_mode)

    def from_steps(self, maps: dict[str, torch.Tensor]) -> torch.Tensor:
        """This method's (N, K-1, h, w) maps picked from :func:`cpmc_maps`'s dict ``maps``, which holds
        every CPMC map at once (so several methods can share one call)."""
        return self._foreground(maps, self.key)

    def from_output(self, out: dict[str, Any], img: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.from_steps(self._maps(out, img, label))


class JointCpmcCam(_CpmcMethod, JointCam):
    """Several of the maps above from one forward pass and one :func:`cpmc_maps` call.

    They are intermediates of the same computation, so the cams stage makes the missing ones
    together (about the cost of one); see :class:`JointCam` for the output.
    """

    group = ("refined", "proto", "cpmc")

    def __init__(self, model, cfg: Config, scales=(1.0,), flip=True, parts=None):
        JointCam.__init__(self, model, scales, flip, parts)
        self.cfg = cfg

    def from_output(self, out: dict[str, Any], img: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        maps = self._maps(out, img, label)
        # (N, M * (K-1), h, w): fused over scales and flips like any map, split in __call__
        return torch.cat([self._foreground(maps, k) for k in self.parts], dim=1)


class RefinedCam(_CpmcMethod):
    """The classifier CAM after context refinement (``refinement``)."""

    key = "refined"
    title = "+ context refinement"
    origin = "CPMC step 2 (SFC's affinity)"
    sections = ("refinement",)


class PrototypeCam(_CpmcMethod):
    """The prototype CAM (IS-CAM) seeded by the refined CAM (``prototypes``)."""

    key = "proto"
    title = "prototype CAM"
    origin = "CPMC step 3 (SIPE)"
    sections = ("refinement", "prototypes")


class CpmcCam(_CpmcMethod):
    """The calibrated CPMC map: global + FN local prototypes, background + FP local prototypes."""

    key = "cpmc"
    title = "CPMC (calibrated)"
    origin = "CPMC step 4"
    sections = ("refinement", "prototypes", "calibration")


# Name -> method class: the one list of CAM methods (ours first, then the peers), read by the config
# checks, the cams stage's keys, the pipeline, the reports and the explorer.
CAM_METHODS: dict[str, type[CamMethod]] = {
    "cam": ClassifierCam,
    "refined": RefinedCam,
    "proto": PrototypeCam,
    "cpmc": CpmcCam,
    "gradcam": GradCamMethod,
    "gradcampp": GradCamPlusPlusMethod,
    "layercam": LayerCamMethod,
}
# The peer baselines, compared in the oracle view only, and this book's maps.
PEERS = tuple(m for m, c in CAM_METHODS.items() if c.peer)
OURS = tuple(m for m in CAM_METHODS if m not in PEERS)

# Groups of methods made from one pass (the intermediates of cpmc_lib.cpmc.cpmc_maps; the
# gradient explainers, which share a forward and backward pass): whichever members of a group a
# run lacks are made together. Group -> its JointCam class.
JOINT_METHODS: dict[tuple[str, ...], type[JointCam]] = {
    JointCpmcCam.group: JointCpmcCam,
    JointGradCam.group: JointGradCam,
}


def joint_group(method: str) -> tuple[str, ...]:
    """The group of :data:`JOINT_METHODS` that ``method`` belongs to (``(method,)`` if none)."""
    return next((g for g in JOINT_METHODS if method in g), (method,))


def make_joint_method(parts: Sequence[str], model: CamNet, cfg: Config) -> JointCam:
    """The :class:`JointCam` that makes ``parts`` (members of one group) in one pass."""
    return JOINT_METHODS[joint_group(parts[0])].from_config(model, cfg, parts=tuple(parts))


def make_cam_method(name: str, model: CamNet, cfg: Config) -> CamMethod:
    """The method registered as ``name`` in :data:`CAM_METHODS`, built from ``cfg``."""
    if name not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {name!r}; methods: {', '.join(CAM_METHODS)}")
    return CAM_METHODS[name].from_config(model, cfg)
