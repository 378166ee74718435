"""Typed configuration: one frozen dataclass per pipeline stage, YAML in and out, ``--set`` overrides.

A :class:`Config` groups the stage configs. Keys are checked: an unknown or mistyped key raises
:class:`ConfigError` naming the key and listing the valid ones, and values are converted to the
declared field type (``--set classifier.epochs=3`` gives an ``int``). Choice-valued fields are
``Literal`` types, checked when the config loads: ``calibration.detached=fpp`` fails at once with
the valid values listed, not after the classifier has trained.

Each stage's cache key (:func:`cpmc_lib.store.stage_hash`) covers that stage's config, the
configs of the stages it reads from, and the seed, so changing a CRF parameter does not retrain
the classifier.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "CalibrationConfig",
    "CamConfig",
    "ClassifierConfig",
    "Config",
    "ConfigError",
    "CrfConfig",
    "DataConfig",
    "PretrainConfig",
    "PrototypeConfig",
    "PseudoConfig",
    "RefinementConfig",
    "SegmentationConfig",
    "SynthConfig",
    "apply_overrides",
    "load_config",
    "save_config",
]


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names it and lists the valid keys."""


@dataclass(frozen=True)
class SynthConfig:
    """Generator of the embedded synthetic WSSS benchmark (``python -m cpmc_lib synth``)."""

    classes: int = 10
    size: int = 128
    train: int = 1000  # 2000 before the workload cut: its cost in papermill_runs/records/workload.json
    val: int = 500
    seed: int = 0
    part_frac: float = 0.2
    context_prob: float = 0.4
    max_objects: int = 3
    absent_context_prob: float = 0.25  # per image: a context disc of a class not in the image
    distractor_prob: float = 0.5  # per image: 1-2 part-less blobs with a group's body
    atypical_prob: float = 0.25  # per object: the group's atypical body (other colour and texture)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where it lies, and which splits each stage reads."""

    kind: Literal["synth", "voc", "coco"] = "synth"
    root: str = "data/synth"  # dataset root (the command line's --data sets it)
    num_classes: int = 11  # K: foreground classes + background
    train_split: str = "train"  # classifier training
    cam_split: str = "train"  # CAMs are scored here, and pseudo labels (WSSS convention)
    # Pseudo labels are made for, and the segmentation networks train on, this split; "" = cam_split.
    # VOC: train_aug (IRN, SIPE, SFC), its CAMs made for the pseudo labels but never scored.
    seg_split: str = ""
    val_split: str = "val"  # segmentation evaluation
    mask_dir: str = ""  # "" = auto (SegmentationClass, else SegmentationClassAug: SBD's, for train_aug)
    limit: int = 0  # use only the first N images of each split (0 = all); for smoke runs
    mask_ids: Literal["contiguous", "coco"] = "contiguous"  # coco masks hold 0..80 | raw category ids 1..90


@dataclass(frozen=True)
class ClassifierConfig:
    """Multi-label classifier whose 1x1 head gives the classifier CAM."""

    backbone: str = "resnet18"  # timm model name (VOC/COCO: resnet50)
    pretrained: bool = False  # timm's own download, for users online
    weights: str = ""  # local weights file (offline machines, or the synthetic ImageNet stand-in)
    # Backbone shape. Synthetic default: the stem, layer1 and layer2 of a one-block-per-stage timm
    # ResNet: CAMs at stride 8 (16x16 for 128 px), receptive field 51 px (objects are 30-70 px).
    # VOC/COCO (SIPE/IRN): layers=[], channels=[], out_indices=[1,2,3,4], output_stride=16,
    # side_channels=[128,128,256,256], freeze_bn=true.
    layers: tuple[int, ...] = (1, 1)  # blocks per stage passed to timm; [] = the model's own
    channels: tuple[int, ...] = (64, 128)  # stage widths passed to timm; [] = the model's own
    out_indices: tuple[int, ...] = (0, 1, 2)  # timm feature indices; the last one feeds the head
    output_stride: int = 8
    side_channels: tuple[int, ...] = (64, 64, 128)  # hierarchical side projections, one per out index
    freeze_bn: bool = False  # IRN's FixedBatchNorm: keep BN statistics (for pretrained backbones)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = 0.9  # SGD momentum (IRN's PolyOptimizer effectively has none; see classifier.py)
    new_lr_mult: float = 10.0  # lr multiplier of the new layers (head, side projections)
    epochs: int = 12  # with synth.train 1000 (records/workload.json); 10 on 2000 images before
    batch_size: int = 32
    lr: float = 0.1  # backbone; new layers get new_lr_mult x (IRN/SIPE: 0.1 / 1.0)
    weight_decay: float = 1e-4
    crop_size: int = 128
    num_workers: int = 1  # a worker runs the transforms single-threaded (tiny ops thrash 2 threads)


@dataclass(frozen=True)
class PretrainConfig:
    """The ImageNet stand-in: pretrain the classifier's backbone on a synthetic *source* set.

    Single-object images of shapes, textures and colours disjoint from the benchmark's, with one
    classification head each (see :mod:`cpmc_lib.pretrain`).
    """

    # On by default: on synth seed 0 it raises the classifier-CAM and prototype-CAM mIoU (measure:
    # benchmarks/measure_pretrain.py). The classifier starts from this stage's weights when
    # classifier.weights is "".
    enabled: bool = True
    images: int = 4000  # source training images (drawn on the fly, deterministic by seed)
    val_images: int = 256  # held-out source images for the reported accuracy
    size: int = 96  # image side in pixels
    epochs: int = 3  # 4 before the workload cut (records/workload.json)
    batch_size: int = 32
    lr: float = 0.05  # SGD, momentum 0.9, poly schedule
    weight_decay: float = 1e-4


@dataclass(frozen=True)
class CamConfig:
    """CAM inference and evaluation."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = True
    batch_size: int = 32
    thresholds_step: float = 0.05


@dataclass(frozen=True)
class RefinementConfig:
    """Context refinement of the classifier CAM by pixel-feature affinity."""

    iterations: int = 2
    # Affinity exponent beta, tuned on synth seed 0 (benchmarks/tune_cpmc.py --grid refine).
    power: float = 32.0
    # context features
    source: Literal["stages", "feat", "hie", "image+feat", "image+stages"] = "stages"


@dataclass(frozen=True)
class PrototypeConfig:
    """Prototype CAM from seeds of the refined CAM."""

    # Background scale of the arg-max that assigns class areas (SFC: 0.3). 0.05: the best plain
    # prototype CAM on synth seed 0 with the pretrained classifier (benchmarks/tune_cpmc.py).
    bg_factor: float = 0.05
    seed_rule: Literal["argmax", "threshold", "quantile", "iou"] = "argmax"  # iou: SIPE
    fg_threshold: float = 0.8  # seed_rule=threshold
    bg_threshold: float = 0.2  # seed_rule=threshold
    fg_quantile: float = 0.5  # seed_rule=quantile: top fraction of each class's area
    bg_quantile: float = 0.3  # seed_rule=quantile: lowest fraction of the image as background
    feature: Literal["hie", "feat"] = "hie"  # prototype features
    clusters: int = 1  # global prototypes per class (k-means inside the seed)
    # Grid cells per global prototype cluster (seeds smaller give none), written for the
    # calibration.grid_ref grid like calibration.min_size: max(1, round(min_size * s^2)) cells of
    # an h x w grid, s = sqrt(h * w) / grid_ref (cpmc.area_cells); cells as written on that grid.
    min_size: int = 1
    bg_mode: Literal["drop", "subtract", "gate"] = "subtract"  # how the background enters the foreground maps


@dataclass(frozen=True)
class CalibrationConfig:
    """Mutual calibration with false-negative / false-positive local prototypes."""

    use_fn: bool = True
    use_fp: bool = True
    # Which map's errors the regions measure. classifier: the refined classifier CAM's misses
    # against the prototype CAM (its extra pixels, split by `detached`) - the default, tuned on synth
    # seed 0; proto: the prototype CAM's errors against the refined CAM (the first reading).
    pairing: Literal["classifier", "proto"] = "classifier"
    ref_rule: Literal["argmax", "quantile"] = "argmax"  # reference labels: bg x ref_bg_factor | per image
    ref_bg_factor: float = 0.5
    ref_bg_quantile: float = 0.5  # ref_rule=quantile: lowest fraction of the image is background
    # Background scale of the prototype CAM's arg-max L_P: above 1, a cell counts as the class's
    # only where the prototype is clearly sure, so the FN region (and its local prototypes) holds
    # less of the context and distractors next to the object.
    proto_bg_factor: float = 1.75
    clusters: int = 1  # M: local prototypes per region (k-means)
    min_size: int = 1  # regions (and clusters) below this many grid cells give no prototype
    # Connectivity split of the FN region (calibration.attached_to): components touching the
    # calibrated map's own region of the class stay FN (a missed part is attached to its object);
    # "drop" discards the detached ones, "fp" makes them FP regions (noise away from any object).
    detached: Literal["keep", "drop", "fp"] = "fp"
    fp_radius: int = 0  # FP local prototypes raise the background within this many cells; -1 = everywhere
    # The grid side (CAM cells) for which fp_radius, fn_radius and min_size (and prototypes.min_size) are
    # written: on an h x w grid they become round(fp_radius * s) and max(1, round(min_size * s^2))
    # cells, s = sqrt(h * w) / grid_ref, i.e. fixed fractions of the grid (fp_radius / grid_ref of its
    # side, min_size / grid_ref^2 of its area). 16: the synthetic default's 16x16 grid, where they are
    # the cells as written; 0 = cells.
    grid_ref: int = 16
    # FN local prototypes raise their class within this many cells (of the grid_ref grid) of the FN
    # region and the classifier's region of the class (-1 = everywhere): body look-alikes elsewhere,
    # distractors above all, stay out.
    fn_radius: int = 1
    # What FP local prototypes do: raise the background channel, lower their own class where they
    # match better than it (calibration.fp_suppression), or both.
    fp_action: Literal["background", "suppress", "both"] = "background"
    # attached: class regions of the calibrated map touching no refined-CAM region of the class are
    # set to 0 (calibration.attachment_gate: distractors, detached context); attached_cam: the same
    # anchored on the raw classifier CAM (arg-max, background x ref_bg_factor), which the affinity
    # has not spread onto look-alike regions. Part of the FP side: use_fp=false switches it off too.
    gate: Literal["none", "attached", "attached_cam"] = "attached_cam"


@dataclass(frozen=True)
class PseudoConfig:
    """Pseudo labels from CAMs."""

    method: str = "cpmc"  # a CAM method of cpmc_lib.cam_methods.CAM_METHODS
    # The background decision, read from no ground truth (pseudo.image_threshold): fixed =
    # bg_threshold; otsu = per image, Otsu's cut of the image's own top-class map; oracle = the
    # CAM's best threshold against the cam split's ground truth (comparison only, not a method).
    threshold_rule: Literal["fixed", "otsu", "oracle"] = "otsu"
    # threshold_rule=fixed: frozen once on synth seed 0, the CPMC row's best threshold of
    # `benchmarks/tune_cpmc.py --grid final`.
    bg_threshold: float = 0.4
    # IRN's confident regions (its conf_fg / conf_bg, 0.30 / 0.05) relative to the background plane
    # t of any rule (labels.band_planes): foreground where the top map > t * band[1], background
    # where it is <= t * band[0], ignore (255) in between; (1, 1) = no ignore zone. Chosen on synth
    # seed 0 through segmentation: `python -m cpmc_lib sweep papermill_runs/band.yaml`.
    band: tuple[float, float] = (0.15, 1.0)
    crf: bool = True  # save the dense-CRF labels (both are scored either way)
    # Which present class an object pixel gets (pseudo.assign_to_parts). parts: where two or more
    # classes' maps exceed contest_share x the plane, the class whose classifier-CAM part (the
    # cells >= part_share of its peak) is nearest - sibling classes share a body, and only the
    # part inside each body tells them apart; argmax: the maps' arg-max alone. Chosen on synth
    # seed 0 through segmentation (README of 9a3ac02, "Whose body is it?").
    assign: Literal["argmax", "parts"] = "parts"
    part_share: float = 0.7
    contest_share: float = 0.5
    # Negative prototypes (cpmc_lib.negatives): a class's labels are ignored (255) where its
    # features are nearer what its classifier CAM fires on in images *without* it (cells >=
    # negative_share x its mean peak on images with it; negative_clusters k-means prototypes) than
    # its own confident cells (>= part_share of the image's peak). Chosen on synth seed 0 through
    # segmentation (papermill_runs/negatives.yaml); false: the labels without them.
    negatives: bool = True
    negative_share: float = 0.5
    negative_clusters: int = 4
    # Only classes whose CAM fires on images without them (>= negative_share x peak) at least
    # negative_outlier x as often as the median class get negatives (negatives.firing_outliers):
    # where most classes fire, the classifier confuses look-alike classes, not a cue like context.
    negative_outlier: float = 3.0

    def __post_init__(self) -> None:
        # The CAM methods are listed once, in their registry (which imports no config at run time).
        from .cam_methods import CAM_METHODS

        if self.method not in CAM_METHODS:
            raise ConfigError(f"pseudo.method={self.method!r} is not one of {', '.join(map(repr, CAM_METHODS))}")


@dataclass(frozen=True)
class CrfConfig:
    """Dense CRF (pydensecrf) kernel parameters.

    The kernel values are IRN/SIPE's (method notes §4), set for VOC's 500 px images. With
    ``size_ref`` > 0 the spatial widths (``*_sxy``) are given for images whose long side is
    ``size_ref`` pixels and scale with the image: exactly IRN's values on VOC, 3.2x narrower on
    128 px synthetic images. ``size_ref: 0`` uses them in pixels as written.
    """

    iterations: int = 10
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 10.0
    size_ref: int = 500  # long side the *_sxy values are meant for; 0 = pixels as written
    workers: int = 2  # processes for CRF over many images; 0 or 1 = in this process


@dataclass(frozen=True)
class SegmentationConfig:
    """DeepLab-style segmentation network trained on pseudo labels (or, for the ceiling, on ground truth).

    Synthetic default: the classifier's small ResNet (stem, layer1, layer2; stride 8), started
    from the ImageNet stand-in like the classifier (``stand_in``), under a DeepLabV3 head of
    width 64, sized to train in a few minutes on 2 CPU cores.
    VOC / COCO (configs/voc.yaml): DeepLabV2 on an ImageNet ResNet-101 as deeplab-pytorch trains it
    for WSSS: backbone resnet101.tv_in1k (torchvision's weights), layers=[], channels=[], head=v2,
    atrous_rates=[6,12,18,24], pretrained=true (or weights=<file>), freeze_bn=true,
    param_groups=deeplab, crop_size=321, batch_size=10, lr=2.5e-4, head_lr_mult=10,
    weight_decay=5e-4, poly schedule. Never start from COCO-trained segmentation weights: they have
    seen the masks.
    """

    backbone: str = "resnet18"  # timm model name; the last feature stage feeds the head
    pretrained: bool = False  # timm's own download, for users online
    layers: tuple[int, ...] = (1, 1)  # blocks per stage passed to timm; [] = the model's own
    channels: tuple[int, ...] = (64, 128)  # stage widths passed to timm; [] = the model's own
    output_stride: int = 8
    head_channels: int = 64  # ASPP width; 256 = torchvision's DeepLabHead unchanged
    atrous_rates: tuple[int, ...] = (2, 4, 6)  # ASPP dilations (16x16 feature maps at 128 px)
    # Network: "v3" DeepLabV3's ASPP + 3x3 conv (torchvision's DeepLabHead at head_channels=256);
    # "v2" DeepLabV2's ASPP, the sum of one dilated 3x3 classifier per atrous rate (deeplab-pytorch).
    head: str = "v3"
    weights: str = ""  # local ImageNet backbone weights (timm names), for offline machines
    # With neither pretrained nor weights: start the backbone from the ImageNet stand-in (the
    # "pretrain" stage, pretrain.enabled), as DeepLab starts from ImageNet; it must have the
    # classifier's backbone, layers and channels. false: from scratch.
    stand_in: bool = True
    # Freeze the backbone's BatchNorm, statistics and affine parameters (deeplab-pytorch's DeepLabV2).
    freeze_bn: bool = False
    # Optimiser groups. "backbone_head": backbone at lr, head at head_lr_mult x lr, one weight decay.
    # "deeplab": deeplab-pytorch's - backbone weights at lr, head weights at head_lr_mult x lr, head
    # biases at 2 x that, biases without weight decay (configs/voc.yaml, configs/coco.yaml).
    param_groups: Literal["backbone_head", "deeplab"] = "backbone_head"
    # One schedule for both networks, long enough for the ground-truth ceiling to converge (val mIoU
    # moves < 0.5 over its last two epochs; seg.full.curve). Schedules tried: the ledger of choices.
    # 8 epochs of 96-pixel crops since the workload cut (records/workload.json); 10 of 128 before.
    epochs: int = 8
    batch_size: int = 16
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    head_lr_mult: float = 1.0  # lr multiplier of the head (10 with a pretrained backbone)
    crop_size: int = 96
    scale: tuple[float, ...] = (0.7, 1.3)  # random rescale range of training images
    color_jitter: float = 0.0  # off: the synthetic classes are told apart by colour
    test_scales: tuple[float, ...] = (1.0,)  # multi-scale test: e.g. [0.75, 1.0, 1.25]
    test_flip: bool = False  # add the horizontally flipped image at test time
    # Also score both networks after the dense CRF (crf section) on val, as the field reports
    # DeepLab (and its weak / full ratio).
    test_crf: bool = True
    curve: bool = True  # score val after epochs (the learning curve in metrics.json)
    curve_last: int = 3  # ... the last this many (0 = all): the convergence reading needs 3 (ledger)
    num_workers: int = 0


@dataclass(frozen=True)
class Config:
    """The whole pipeline's configuration."""

    run: str = "default"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N; CPMC_DEVICE overrides "auto"
    runs_dir: str = "runs"
    synth: SynthConfig = field(default_factory=SynthConfig)
    data: DataConfig = field(default_factory=DataConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    cams: CamConfig = field(default_factory=CamConfig)
    refinement: RefinementConfig = field(default_factory=RefinementConfig)
    prototypes: PrototypeConfig = field(default_factory=PrototypeConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    crf: CrfConfig = field(default_factory=CrfConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._=+-]*", self.run) or ".." in self.run:
            raise ConfigError(
                f"run={self.run!r}: a run name is one folder name under runs_dir (letters, digits and . _ = + -, "
                "not starting with a dot, no / or ..), e.g. --run my-run"
            )
        for key, (ok, must) in _RULES.items():
            section, name = key.split(".")
            value = getattr(getattr(self, section), name)
            if not ok(value):
                raise ConfigError(f"{key}={value!r} {must}")

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        return _build(cls, d, "")

    def replace(self, **overrides: Any) -> Config:
        """A copy with ``dotted.key=value`` overrides applied, e.g. ``cfg.replace(**{"crf.iterations": 5})``."""
        def text(v: Any) -> str:  # a tuple or list as the YAML list a --set would give
            return "[" + ", ".join(map(str, v)) + "]" if isinstance(v, (list, tuple)) else str(v)

        return apply_overrides(self, [f"{k}={text(v)}" for k, v in overrides.items()])

    def uses_pretrain_stage(self) -> bool:
        """True when the classifier starts from the synthetic ImageNet stand-in (no other weights given)."""
        c = self.classifier
        return self.pretrain.enabled and not c.weights and not c.pretrained

    def segmentation_uses_pretrain_stage(self) -> bool:
        """True when the segmentation backbone starts from the ImageNet stand-in (no other weights given)."""
        s = self.segmentation
        return self.pretrain.enabled and s.stand_in and not s.weights and not s.pretrained

    def seg_split(self) -> str:
        """The split pseudo labels are made for and the segmentation networks train on.

        ``data.seg_split``, or ``data.cam_split`` when that is "".
        """
        return self.data.seg_split or self.data.cam_split

    def data_root(self) -> Path:
        """The dataset root, ``data.root`` (a relative one is relative to the working directory)."""
        return Path(self.data.root)

    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.run


def _positive(x: float) -> bool:
    return x > 0


def _at_least(n: int) -> Callable[[float], bool]:
    return lambda x: x >= n


def _share(x: float) -> bool:
    return 0 < x <= 1


# Values a key must take (checked when a config is built, i.e. when it loads): key -> (test, what it must be).
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{f"{s}.epochs": (_at_least(1), "must be at least 1") for s in ("classifier", "pretrain", "segmentation")},
    **{f"{s}.batch_size": (_at_least(1), "must be at least 1") for s in ("classifier", "pretrain", "cams")},
    # the ASPP's pooling branch normalises over the batch: a batch of one cannot train
    "segmentation.batch_size": (_at_least(2), "must be at least 2"),
    **{f"{s}.lr": (_positive, "must be > 0") for s in ("classifier", "pretrain", "segmentation")},
    **{f"{s}.weight_decay": (_at_least(0), "must be >= 0") for s in ("classifier", "pretrain", "segmentation")},
    **{f"{s}.crop_size": (_at_least(16), "must be at least 16 pixels") for s in ("classifier", "segmentation")},
    "pretrain.size": (_at_least(16), "must be at least 16 pixels"),
    "pretrain.images": (_at_least(1), "must be at least 1"),
    **{k: (_positive, "must be > 0") for k in ("classifier.new_lr_mult", "segmentation.head_lr_mult")},
    **{f"{s}.momentum": (lambda x: 0 <= x < 1, "must lie in [0, 1)") for s in ("classifier", "segmentation")},
    **{f"{s}.num_workers": (_at_least(0), "must be >= 0") for s in ("classifier", "segmentation")},
    "data.num_classes": (_at_least(2), "must be at least 2 (background and one class)"),
    **{k: (_at_least(0), "must be >= 0 (0 = all)") for k in ("data.limit", "segmentation.curve_last")},
    "cams.thresholds_step": (lambda x: 0 < x < 1, "must lie in (0, 1)"),
    **{k: (lambda v: len(v) > 0 and all(x > 0 for x in v), "must be one or more factors > 0")
       for k in ("cams.scales", "segmentation.test_scales")},
    "segmentation.scale": (lambda v: len(v) == 2 and 0 < v[0] <= v[1], "must be [low, high] with 0 < low <= high"),
    "refinement.iterations": (_at_least(0), "must be >= 0"),
    "refinement.power": (_positive, "must be > 0"),
    **{f"{s}.clusters": (_at_least(1), "must be at least 1") for s in ("prototypes", "calibration")},
    **{f"calibration.{s}_radius": (_at_least(-1), "must be >= -1 (-1 = everywhere)") for s in ("fp", "fn")},
    "pseudo.band": (lambda b: len(b) == 2 and 0 < b[0] <= 1 <= b[1], "must satisfy 0 < band[0] <= 1 <= band[1]"),
    "pseudo.part_share": (_share, "must lie in (0, 1]"),
    "pseudo.contest_share": (_at_least(0), "must be >= 0"),
    "pseudo.negative_share": (_share, "must lie in (0, 1]"),
    "pseudo.negative_clusters": (_at_least(1), "must be at least 1"),
    "crf.iterations": (_at_least(1), "must be at least 1"),
    "crf.workers": (_at_least(0), "must be >= 0"),
}


def _to_plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _build(cls: type, d: Any, where: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of keys, got {type(d).__name__}")
    types_ = _field_types(cls)
    unknown = sorted(set(d) - set(types_))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key {prefix + unknown[0]!r}; valid keys"
            f"{' in ' + where if where else ''}: {', '.join(types_)}"
        )
    kwargs = {}
    for name, value in d.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(types_[name], value, key)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a ``--set`` string) to the declared type ``tp``."""
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    origin = typing.get_origin(tp)
    if origin is tuple:
        (elem, *_rest) = typing.get_args(tp)
        if isinstance(value, str):
            value = yaml.safe_load(value if value.strip().startswith("[") else f"[{value}]")
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_coerce(elem, v, key) for v in value)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(repr(c) for c in choices)}")
        return value
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: union types are not supported in configs")
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
                return False
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if tp is str:
            if isinstance(value, (list, tuple, dict)):
                raise TypeError(value)  # a list or mapping is not one string
            return "" if value is None else str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}") from None
    raise ConfigError(f"{key}: unsupported field type {tp}")


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """Apply ``section.key=value`` strings (the command line's ``--set``) and re-validate."""
    d = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. classifier.epochs=3)")
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        node, cls = d, Config
        for i, part in enumerate(parts):
            types_ = _field_types(cls)
            if part not in types_:
                where = ".".join(parts[:i]) or "config"
                raise ConfigError(
                    f"unknown config key {dotted!r}; valid keys in {where}: {', '.join(types_)}"
                )
            if i == len(parts) - 1:
                if dataclasses.is_dataclass(types_[part]):
                    raise ConfigError(f"{dotted} is a section; set one of its keys, e.g. {dotted}.<key>=...")
                node[part] = raw if typing.get_origin(types_[part]) is tuple else yaml.safe_load(raw)
                if types_[part] is str or typing.get_origin(types_[part]) is Literal:
                    node[part] = raw  # as written: "off" is a choice, not False
            else:
                if not dataclasses.is_dataclass(types_[part]):
                    raise ConfigError(f"{'.'.join(parts[: i + 1])} is a value, not a section")
                node, cls = node[part], types_[part]
    return Config.from_dict(d)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (missing keys take their defaults), then apply ``overrides``."""
    d: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (try configs/default.yaml)")
        with open(path) as f:
            loaded = yaml.safe_load(f)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        d = loaded
    try:
        cfg = Config.from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
    return apply_overrides(cfg, overrides)


def save_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Write ``cfg`` as YAML (atomically); :func:`load_config` reads it back to an equal config."""
    from .io import atomic_write

    with atomic_write(path, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
    return Path(path)
