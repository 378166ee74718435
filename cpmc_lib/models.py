"""The networks: the CAM network (a timm backbone, a 1x1 classifier head and hierarchical side
features) and the segmentation network (:class:`SegNet`, DeepLabV3 over a timm backbone).

:class:`CamNet` follows IRN/SIPE: the image score is the global average of the per-pixel class
projection, so the classifier CAM is that projection itself (``cam = W^T feat``; ReLU gives the
map). Side projections of several stages give the hierarchical feature that prototype methods
(SIPE's IS-CAM, CPMC) compare pixels with.

Two configurations (``cfg.classifier``):

- **synthetic default**: the stem, ``layer1`` and ``layer2`` of a timm ResNet built with one
  BasicBlock per stage and widths 64/128, trained from scratch. CAMs lie at stride 8 (16x16 for
  128 px images). Its theoretical receptive field is 51 px (stem 11, layer1 +16, layer2 +24),
  below the size of an object (30-70 px): a probe whose last stage was dilated (receptive field
  ~107 px) gave diffuse CAMs and a much lower mIoU. Two blocks per stage would reach 99 px and
  double the training time. The head sees stride 8 directly, so no stage is dilated.
- **VOC / COCO** (SIPE/IRN): ``resnet50`` stages 1-4, ``output_stride=16``, side projections to
  128/128/256/256 channels (768-d hierarchical feature), BN statistics frozen. Deviation: timm
  reaches output stride 16 by *dilating* ``layer4`` (dilation 2), IRN keeps stride 1 and
  dilation 1 there.

Example:
    >>> net = CamNet("resnet18", num_classes=3, out_indices=(0, 1, 2), side_channels=(8, 8, 16),
    ...              layers=(1, 1), channels=(16, 32))
    >>> out = net(torch.zeros(2, 3, 64, 64))
    >>> tuple(out["logits"].shape), tuple(out["cam"].shape), tuple(out["hie"].shape)
    ((2, 2), (2, 2, 8, 8), (2, 32, 8, 8))

:class:`SegNet` is torchvision's DeepLabV3 head (ASPP + 3x3 conv + 1x1 classifier) over the last
stage of a timm backbone (``features_only``), its logits upsampled bilinearly to the input size.
torchvision's ``DeepLabHead`` fixes the ASPP width at 256; :func:`deeplab_head` builds the same
layers at another width, because at 256 the head costs 2.7x the small synthetic backbone.

    >>> seg = SegNet("resnet18", num_classes=3, layers=(1, 1), channels=(8, 16), head_channels=8)
    >>> tuple(seg(torch.zeros(2, 3, 40, 56)).shape)
    (2, 3, 40, 56)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead

from .io import load_torch
from .runtime import channels_last

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "CamNet",
    "DeepLabV2Head",
    "SegNet",
    "build_model",
    "build_segnet",
    "deeplab_head",
    "hierarchical_features",
    "load_classifier",
    "load_state_checked",
    "load_weights",
    "state_mismatch",
]


def hierarchical_features(
    stages: Sequence[torch.Tensor], side: nn.ModuleList, size: tuple[int, int]
) -> torch.Tensor:
    """SIPE's hierarchical feature: side projections of detached stages, L2-normalised, concatenated.

    Args:
        stages: stage outputs, each (B, C_s, H_s, W_s).
        side: one 1x1 conv (no bias) per stage, C_s -> D_s.
        size: (h, w) of the CAM grid every projection is resized to (bilinear).

    Returns:
        (B, sum D_s, h, w); each stage's D_s channels have unit L2 norm per pixel (up to the 1e-5
        guard and the bilinear resize, which is applied after normalisation as in SIPE).
    """
    maps = []
    for x, proj in zip(stages, side, strict=True):
        # Detached: the prototype branch must not reshape the classifier's features (SIPE).
        y = proj(x.detach())
        y = y / (y.norm(dim=1, keepdim=True) + 1e-5)
        if y.shape[-2:] != tuple(size):
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        maps.append(y)
    return torch.cat(maps, dim=1)


class CamNet(nn.Module):
    """Multi-label classifier whose head is a 1x1 conv over the last stage (IRN/SIPE).

    Args:
        backbone: timm model name (built with ``features_only=True``).
        num_classes: K, background included; the head has K-1 outputs.
        out_indices: timm feature indices; all feed the hierarchical feature, the last one the head.
        side_channels: output channels of the side projection of each out index.
        output_stride: passed to timm (ResNets dilate the stages past it).
        layers: blocks per stage passed to timm (empty: the model's own).
        channels: stage widths passed to timm (empty: the model's own).
        pretrained: let timm download and load its weights.
        freeze_bn: keep every BatchNorm in eval mode (IRN's FixedBatchNorm; affine stays trainable).
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        out_indices: Sequence[int] = (1, 2, 3, 4),
        side_channels: Sequence[int] = (128, 128, 256, 256),
        output_stride: int = 16,
        layers: Sequence[int] = (),
        channels: Sequence[int] = (),
        pretrained: bool = False,
        freeze_bn: bool = False,
    ) -> None:
        super().__init__()
        if len(side_channels) != len(out_indices):
            raise ValueError(
                f"side_channels {tuple(side_channels)} needs one entry per out index {tuple(out_indices)}"
            )
        extra = {}
        if layers:
            extra["layers"] = tuple(layers)
        if channels:
            extra["channels"] = tuple(channels)
        self.arch = (
            f"{backbone}(out_indices={tuple(out_indices)}, output_stride={output_stride}"
            + "".join(f", {k}={v}" for k, v in extra.items())
            + f", side_channels={tuple(side_channels)}, classes={num_classes - 1})"
        )
        self.backbone = timm.create_model(
            backbone,
            features_only=True,
            pretrained=pretrained,
            out_indices=tuple(out_indices),
            output_stride=output_stride,
            **extra,
        )
        in_chs = self.backbone.feature_info.channels()
        self.side = nn.ModuleList(
            nn.Conv2d(c, d, 1, bias=False) for c, d in zip(in_chs, side_channels, strict=True)
        )
        self.classifier = nn.Conv2d(in_chs[-1], num_classes - 1, 1, bias=False)
        self.freeze_bn = freeze_bn

    @property
    def stride(self) -> int:
        """Output stride of the CAM grid."""
        return self.backbone.feature_info.reduction()[-1]

    @property
    def last_stage(self) -> nn.Module:
        """The backbone module whose output is ``feat`` (the Grad-CAM target layer)."""
        name = self.backbone.feature_info.module_name()[-1].replace(".", "_")
        return dict(self.backbone.named_children())[name]

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters of the layers added to the backbone (head and side projections; 10x lr)."""
        return [*self.classifier.parameters(), *self.side.parameters()]

    def train(self, mode: bool = True) -> CamNet:
        super().train(mode)
        if self.freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Named maps, SIPE style.

        Args:
            x: (B, 3, H, W) normalised images.

        Returns:
            dict with ``logits`` (B, K-1) image scores = spatial mean of ``cam``; ``cam``
            (B, K-1, h, w) raw class projection (before ReLU), h = H / stride; ``feat``
            (B, C, h, w) last stage; ``hie`` (B, D, h, w) hierarchical feature
            (:func:`hierarchical_features`); ``stages`` the list of stage outputs.
        """
        stages = self.backbone(x)
        feat = stages[-1]
        cam = self.classifier(feat)
        return {
            "logits": cam.mean(dim=(2, 3)),
            "cam": cam,
            "feat": feat,
            "hie": hierarchical_features(stages, self.side, feat.shape[-2:]),
            "stages": stages,
        }


def _unwrap(state: dict) -> dict:
    # Checkpoints of engine.fit hold {"model": ...}; others often {"state_dict": ...}.
    for key in ("model", "state_dict"):
        if key in state and isinstance(state[key], dict):
            return state[key]
    return state


def state_mismatch(own: dict, state: dict, unexpected: bool = True) -> str:
    """What keeps ``state`` from loading into a module whose state dict is ``own``; "" if nothing.

    Lists up to five missing keys, unexpected keys (when ``unexpected``) and shape mismatches.
    """
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own)) if unexpected else []
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and hasattr(state[k], "shape") and state[k].shape != v.shape
    ]
    return "; ".join(
        f"{what}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
        for what, items in (("missing", missing), ("unexpected", extra), ("shape mismatch", wrong))
        if items
    )


def load_state_checked(module: nn.Module, state: dict, path: str | Path, hint: str = "") -> nn.Module:
    """``module.load_state_dict(state)``, or a ValueError naming ``path`` and what does not fit.

    torch's own error names neither the file nor the architecture and lists every key.
    """
    details = state_mismatch(module.state_dict(), state)
    if details:
        arch = getattr(module, "arch", type(module).__name__)
        raise ValueError(f"{path}: state dict that does not fit {arch} ({details}){hint}")
    module.load_state_dict(state)
    return module


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a local weights file into ``model``, checking every key and shape.

    ``model`` is a :class:`CamNet` or any network with a timm ``backbone`` and an ``arch``
    description (the segmentation network's ``segmentation.weights`` use it too).

    Accepted files (``torch.save`` of a dict, optionally wrapped as ``{"model": ...}`` or
    ``{"state_dict": ...}``):

    - a **full CamNet** state dict (keys ``backbone.*``, ``side.*``, ``classifier.*``), e.g. a
      ``model.pt`` of the classifier stage: must match exactly;
    - a **backbone-only** state dict with timm's names (``conv1.weight``, ``layer1.0.bn1.bias``,
      ...): must cover every backbone key; entries the features-only backbone lacks (a
      classification head such as ``fc.*``, or stages past the last out index) are ignored.
      Head and side projections keep their initialisation.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: keys or shapes do not fit, or the file is damaged or holds more than tensors
            (:func:`cpmc_lib.io.load_torch`); the message names the file and ``model.arch``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist (expected weights for {model.arch})")
    state = _unwrap(load_torch(path, f"weights for {model.arch}"))
    full = any(k.startswith("backbone.") for k in state)
    target = model if full else model.backbone
    own = target.state_dict()
    details = state_mismatch(own, state, unexpected=full)
    if details:
        kind = f"a full {type(model).__name__}" if full else "a backbone-only"
        raise ValueError(f"{path}: {kind} state dict that does not fit {model.arch} ({details})")
    target.load_state_dict({k: state[k] for k in own})
    return model


def build_model(cfg: Config, pretrained: bool | None = None) -> CamNet:
    """The :class:`CamNet` that ``cfg.classifier`` describes, with ``cfg.data.num_classes`` classes.

    ``pretrained`` overrides ``cfg.classifier.pretrained`` (``load_classifier`` passes False so
    that reloading a trained model never downloads); ``cfg.classifier.weights`` is loaded if set.
    """
    c = cfg.classifier
    model = CamNet(
        c.backbone,
        cfg.data.num_classes,
        out_indices=c.out_indices,
        side_channels=c.side_channels,
        output_stride=c.output_stride,
        layers=c.layers,
        channels=c.channels,
        pretrained=c.pretrained if pretrained is None else pretrained,
        freeze_bn=c.freeze_bn,
    )
    if c.weights and pretrained is None:
        load_weights(model, c.weights)
    return model


def load_classifier(path: str | Path, cfg: Config) -> CamNet:
    """A trained classifier (the ``model.pt`` of the classifier stage), on the CPU, in eval mode."""
    return channels_last(load_weights(build_model(cfg, pretrained=False), path), "cpu").eval()


# --- the segmentation network --------------------------------------------------------------------


def deeplab_head(
    in_channels: int, num_classes: int, atrous_rates: Sequence[int] = (12, 24, 36), width: int = 256
) -> nn.Sequential:
    """torchvision's DeepLabV3 head with an ASPP of ``width`` channels.

    ``width=256`` returns ``DeepLabHead`` itself; other widths build its layers
    (ASPP -> 3x3 conv -> BN -> ReLU -> 1x1 conv) around torchvision's ``ASPP``.

    Returns:
        module mapping (B, in_channels, h, w) to (B, num_classes, h, w) logits.
    """
    if width == 256:
        return DeepLabHead(in_channels, num_classes, tuple(atrous_rates))
    return nn.Sequential(
        ASPP(in_channels, tuple(atrous_rates), width),
        nn.Conv2d(width, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, num_classes, 1),
    )


class DeepLabV2Head(nn.Module):
    """DeepLabV2's ASPP: one dilated 3x3 classifier per atrous rate, their logits summed.

    As deeplab-pytorch builds it (``_ASPP``): convolutions with bias, weights drawn from
    N(0, 0.01), biases zero; no BatchNorm, no image pooling.

    Args:
        in_channels: channels of the backbone's last stage (2048 for ResNet-101).
        num_classes: K, background included.
        atrous_rates: dilations (DeepLabV2: 6, 12, 18, 24).
    """

    def __init__(self, in_channels: int, num_classes: int, atrous_rates: Sequence[int] = (6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r, bias=True) for r in atrous_rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, h, w) -> (B, K, h, w) logits."""
        return sum(conv(x) for conv in self.branches)


class SegNet(nn.Module):
    """DeepLab: a timm backbone's last stage, an ASPP head, logits upsampled to the input.

    Args:
        backbone: timm model name (built with ``features_only=True, out_indices=(-1,)``).
        num_classes: K, background included.
        output_stride: passed to timm (ResNets dilate the stages past it).
        layers, channels: blocks and widths per stage passed to timm (empty: the model's own).
        head_channels: ASPP width (:func:`deeplab_head`; head "v3" only).
        atrous_rates: ASPP dilations.
        pretrained: let timm download its weights.
        head: "v3" (:func:`deeplab_head`) or "v2" (:class:`DeepLabV2Head`).
        freeze_bn: keep every backbone BatchNorm in eval mode; the optimiser leaves out its affine
            parameters too (:meth:`frozen_bn_parameters`, deeplab-pytorch).
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        output_stride: int = 16,
        layers: Sequence[int] = (),
        channels: Sequence[int] = (),
        head_channels: int = 256,
        atrous_rates: Sequence[int] = (6, 12, 18),
        pretrained: bool = False,
        head: str = "v3",
        freeze_bn: bool = False,
    ) -> None:
        super().__init__()
        if head not in ("v2", "v3"):
            raise ValueError(f"unknown segmentation.head {head!r}; heads: v2 (DeepLabV2), v3 (DeepLabV3)")
        extra: dict[str, Any] = {}
        if layers:
            extra["layers"] = tuple(layers)
        if channels:
            extra["channels"] = tuple(channels)
        self.arch = f"DeepLab{head.upper()}({backbone}, output_stride={output_stride}" + "".join(
            f", {k}={v}" for k, v in extra.items()
        ) + f", classes={num_classes})"
        self.freeze_bn = freeze_bn
        self.backbone = timm.create_model(
            backbone,
            features_only=True,
            out_indices=(-1,),
            output_stride=output_stride,
            pretrained=pretrained,
            **extra,
        )
        in_channels = self.backbone.feature_info.channels()[-1]
        if head == "v2":
            self.head: nn.Module = DeepLabV2Head(in_channels, num_classes, atrous_rates)
        else:
            self.head = deeplab_head(in_channels, num_classes, atrous_rates, head_channels)

    def train(self, mode: bool = True) -> SegNet:
        super().train(mode)
        if self.freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def frozen_bn_parameters(self) -> list[nn.Parameter]:
        """The backbone's BatchNorm weights and biases when ``freeze_bn``: deeplab-pytorch trains
        neither them nor the statistics (they are left out of the optimiser); [] otherwise."""
        if not self.freeze_bn:
            return []
        return [p for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                for p in m.parameters(recurse=False)]  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, K, H, W) logits."""
        logits = self.head(self.backbone(x)[-1])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_segnet(cfg: Config, pretrained: bool | None = None) -> SegNet:
    """The :class:`SegNet` of ``cfg.segmentation`` with ``cfg.data.num_classes`` classes.

    ``pretrained`` overrides ``segmentation.pretrained``; ``load_segnet`` passes False, so that
    reloading a trained network neither downloads nor reads ``segmentation.weights``, which is
    loaded into the backbone otherwise (:func:`cpmc_lib.models.load_weights`: a backbone-only
    state dict with timm's names; its classification head is ignored).
    """
    s = cfg.segmentation
    model = SegNet(
        s.backbone,
        cfg.data.num_classes,
        output_stride=s.output_stride,
        layers=s.layers,
        channels=s.channels,
        head_channels=s.head_channels,
        atrous_rates=s.atrous_rates,
        pretrained=s.pretrained if pretrained is None else pretrained,
        head=s.head,
        freeze_bn=s.freeze_bn,
    )
    if s.weights and pretrained is None:
        load_weights(model, s.weights)
    return model
