"""Stages "segmentation" and "segmentation_gt": a DeepLab network trained on pseudo labels or on ground truth.

The last step of every WSSS pipeline: a fully convolutional segmentation network is trained on
the pseudo labels (cross-entropy, 255 ignored) and scored on the val split against ground truth.
Training the *same* network with the *same* schedule on the ground-truth masks of the same images
gives the fully supervised ceiling that the WSSS result is compared with.

:class:`SegNet` is torchvision's DeepLabV3 head (ASPP + 3x3 conv + 1x1 classifier) over the last
stage of a timm backbone (``features_only``), its logits upsampled bilinearly to the input size.
torchvision's ``DeepLabHead`` fixes the ASPP width at 256; :func:`deeplab_head` builds the same
layers at another width, because at 256 the head costs 2.7x the small synthetic backbone.

Training uses :func:`cpmc_lib.engine.fit` (per-epoch checkpoint, resume) with SGD, poly learning
rate, and random scale / crop / flip applied jointly to image and label
(:func:`cpmc_lib.transforms.train_transform`). Testing optionally fuses several scales and the
flipped image (softmax averaged) and scores the dense-CRF output as well (deeplab-pytorch's
post-processing; kernel parameters from the ``crf`` section).

Outputs: ``runs/<run>/segmentation/`` (labels="pseudo") or ``runs/<run>/segmentation_gt/``
(labels="gt"), each with ``model.pt``, ``checkpoint.pt``, ``history.json`` and the manifest
whose result is :func:`run`'s dict.

Example:
    >>> net = SegNet("resnet18", num_classes=3, layers=(1, 1), channels=(8, 16), head_channels=8)
    >>> tuple(net(torch.zeros(2, 3, 40, 56)).shape)
    (2, 3, 40, 56)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead

from . import distributed, pseudo
from .config import Config, CrfConfig, SegmentationConfig
from .crf import crf_map
from .datasets import build_dataset, collate
from .engine import fit, poly_lr
from .io import IGNORE_INDEX, read_mask_png, save_json, save_torch
from .metrics import ConfusionMeter
from .progress import tqdm
from .runtime import channels_last, loader_options, pick_device, seed_everything, to_device, worker_init_fn
from .store import RunStore
from .transforms import denormalize, eval_transform, train_transform

__all__ = [
    "LABELS",
    "MaskFolderDataset",
    "SegNet",
    "build_segnet",
    "deeplab_head",
    "evaluate",
    "examples",
    "load_segnet",
    "make_optimizer",
    "predict",
    "run",
    "segmentation_loss",
    "train",
]

# labels= of run() -> stage name in the run store.
LABELS = {"pseudo": "segmentation", "gt": "segmentation_gt"}


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


class SegNet(nn.Module):
    """DeepLabV3: a timm backbone's last stage, an ASPP head, logits upsampled to the input.

    Args:
        backbone: timm model name (built with ``features_only=True, out_indices=(-1,)``).
        num_classes: K, background included.
        output_stride: passed to timm (ResNets dilate the stages past it).
        layers, channels: blocks and widths per stage passed to timm (empty: the model's own).
        head_channels: ASPP width (:func:`deeplab_head`).
        atrous_rates: ASPP dilations.
        pretrained: let timm download its weights.
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
    ) -> None:
        super().__init__()
        extra: dict[str, Any] = {}
        if layers:
            extra["layers"] = tuple(layers)
        if channels:
            extra["channels"] = tuple(channels)
        self.backbone = timm.create_model(
            backbone,
            features_only=True,
            out_indices=(-1,),
            output_stride=output_stride,
            pretrained=pretrained,
            **extra,
        )
        self.head = deeplab_head(
            self.backbone.feature_info.channels()[-1], num_classes, atrous_rates, head_channels
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, K, H, W) logits."""
        logits = self.head(self.backbone(x)[-1])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_segnet(cfg: Config) -> SegNet:
    """The :class:`SegNet` of ``cfg.segmentation`` with ``cfg.data.num_classes`` classes."""
    s = cfg.segmentation
    return SegNet(
        s.backbone,
        cfg.data.num_classes,
        output_stride=s.output_stride,
        layers=s.layers,
        channels=s.channels,
        head_channels=s.head_channels,
        atrous_rates=s.atrous_rates,
        pretrained=s.pretrained,
    )


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pixel cross-entropy, 255 ignored: (B, K, H, W) logits, (B, H, W) int64 mask."""
    return F.cross_entropy(logits.float(), mask, ignore_index=IGNORE_INDEX)


def make_optimizer(model: SegNet, s: SegmentationConfig) -> torch.optim.SGD:
    """SGD with momentum; the head at ``head_lr_mult`` x lr."""
    groups = [
        {"params": list(model.backbone.parameters()), "lr": s.lr},
        {"params": list(model.head.parameters()), "lr": s.lr * s.head_lr_mult},
    ]
    return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)


class MaskFolderDataset(Dataset):
    """``dataset``'s samples with ``mask`` replaced by ``<folder>/<name>.png`` (pseudo labels).

    Args:
        dataset: a :mod:`cpmc_lib.datasets` dataset built without a transform.
        folder: PNG folder (e.g. :func:`cpmc_lib.pseudo.labels_dir`).
        transform: applied to the sample after the mask is replaced.
    """

    def __init__(self, dataset: Dataset, folder: str | Path, transform=None) -> None:
        self.dataset, self.folder, self.transform = dataset, Path(folder), transform
        self.names = list(dataset.names)
        missing = [n for n in self.names if not (self.folder / f"{n}.png").is_file()]
        if missing:
            raise FileNotFoundError(
                f"{self.folder}: no pseudo label for {len(missing)} of {len(self.names)} images "
                f"(first: {missing[0]}.png); run the pseudo stage"
            )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.dataset[i]
        sample.pop("diag", None)
        mask = read_mask_png(self.folder / f"{self.names[i]}.png").astype(np.int64)
        sample["mask"] = tv_tensors.Mask(torch.from_numpy(mask))
        return self.transform(sample) if self.transform is not None else sample


@torch.no_grad()
def predict(
    model: nn.Module, img: torch.Tensor, scales: Sequence[float] = (1.0,), flip: bool = False
) -> torch.Tensor:
    """Class probabilities, averaged over scales (and the flipped image).

    Args:
        img: (B, 3, H, W) normalised images.
        scales: resize factors of the input.
        flip: also run the horizontally flipped image and flip its output back.

    Returns:
        (B, K, H, W) softmax probabilities.
    """
    H, W = img.shape[-2:]
    total, n = None, 0
    for s in scales:
        x = img if s == 1.0 else F.interpolate(img, scale_factor=s, mode="bilinear", align_corners=False)
        views = [x, x.flip(-1)] if flip else [x]
        for j, v in enumerate(views):
            logits = model(v)
            logits = logits.flip(-1) if j == 1 else logits
            p = F.interpolate(logits.float(), size=(H, W), mode="bilinear", align_corners=False).softmax(1)
            total, n = (p if total is None else total + p), n + 1
    return total / n


def _predictions(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    device: torch.device,
    scales: Sequence[float],
    flip: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per image: (normalised img (3, H, W), probs (K, H, W), ground truth (H, W)), all on the CPU."""
    model.eval()
    for batch in loader:
        imgs, masks = batch["img"], batch["mask"]
        if isinstance(imgs, list):  # sizes differ: one image at a time
            probs = [predict(model, x[None].to(device), scales, flip)[0].cpu() for x in imgs]
        else:
            probs = predict(model, imgs.to(device), scales, flip).cpu()
        yield from zip(imgs, probs, masks, strict=True)


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    num_classes: int,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crf: CrfConfig | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """mIoU of ``model`` on ``dataset`` (built with :func:`~cpmc_lib.transforms.eval_transform`).

    Returns:
        dict with ``miou``, ``iou``, ``precision``, ``recall`` (of :func:`cpmc_lib.metrics.miou`'s
        confusion protocol) and, when ``crf`` is given, ``miou_crf``, ``precision_crf``, ``recall_crf``
        of the dense-CRF post-processed predictions.
    """
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    bar = tqdm(loader, desc="evaluate", disable=not progress, leave=False)
    plain = ConfusionMeter(num_classes)

    def scored() -> Iterator[tuple[np.ndarray, np.ndarray, torch.Tensor]]:
        for img, probs, gt in _predictions(model, bar, device, scales, flip):
            plain.update(probs.argmax(0), gt)
            if crf is not None:  # CRF input, ground truth as the tag
                yield denormalize(img).permute(1, 2, 0).numpy(), probs.numpy(), gt

    if crf is None:
        for _ in scored():
            pass
        return plain.compute()
    with_crf = ConfusionMeter(num_classes)
    for post, gt in crf_map(scored(), crf, progress=False):
        with_crf.update(post.argmax(0), gt)
    scores, crf_scores = plain.compute(), with_crf.compute()
    return {**scores, **{f"{k}_crf": crf_scores[k] for k in ("miou", "iou", "precision", "recall")}}


def train(
    cfg: Config,
    out: str | Path,
    device: torch.device,
    label_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``cfg.segmentation``'s network into ``out`` (resuming from its ``checkpoint.pt``) and score it.

    Args:
        label_dir: folder of pseudo label PNGs for the ``cfg.data.cam_split`` images; None trains
            on their ground-truth masks (the fully supervised ceiling).

    Returns:
        dict with ``val_miou``, ``val_precision``, ``val_recall``, ``val_iou`` (per class),
        ``val_miou_crf`` (with ``test_crf``), ``epochs``, ``train_seconds``, ``eval_seconds``,
        ``model``.
    """
    start = time.perf_counter()
    out, s = Path(out), cfg.segmentation
    seed_everything(cfg.seed)  # the initial weights
    model = channels_last(build_segnet(cfg), device)
    transform = train_transform(s.crop_size, scale=tuple(s.scale), color_jitter=s.color_jitter)
    if label_dir is None:
        train_set: Dataset = build_dataset(cfg, cfg.data.cam_split, transform)
    else:
        train_set = MaskFolderDataset(build_dataset(cfg, cfg.data.cam_split), label_dir, transform)
    if len(train_set) < s.batch_size:
        raise ValueError(
            f"{len(train_set)} training images is fewer than segmentation.batch_size={s.batch_size}"
        )

    batch_size = distributed.local_batch_size(s.batch_size, "segmentation.batch_size")  # this rank's share

    def make_loader(generator: torch.Generator) -> DataLoader:
        # drop_last: the ASPP pooling branch's BatchNorm fails on a batch of one.
        return DataLoader(
            train_set, batch_size=batch_size, sampler=distributed.make_sampler(train_set, generator),
            drop_last=True, generator=generator, collate_fn=collate, worker_init_fn=worker_init_fn,
            **loader_options(device, s.num_workers),
        )  # fmt: skip

    def step(model: SegNet, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        img, mask = to_device(batch["img"], device), batch["mask"].to(device, non_blocking=True)
        return {"loss": segmentation_loss(model(img), mask)}

    optimizer = make_optimizer(model, s)
    steps = s.epochs * (len(train_set) // s.batch_size)
    history = fit(
        model, make_loader, step, optimizer, s.epochs, out / "checkpoint.pt", cfg.seed, device,
        scheduler=poly_lr(optimizer, steps), progress=progress, desc="segmentation",
    )  # fmt: skip
    trained = time.perf_counter()
    scores = None
    if distributed.is_main():  # the other ranks wait for rank 0's scores
        save_json(out / "history.json", history)
        save_torch(out / "model.pt", model.state_dict())
        val_set = build_dataset(cfg, cfg.data.val_split, eval_transform())
        scores = evaluate(
            model, val_set, device, cfg.data.num_classes, s.test_scales, s.test_flip,
            cfg.crf if s.test_crf else None, s.batch_size, progress,
        )  # fmt: skip
    scores = distributed.broadcast_object(scores)
    result = {f"val_{k}": v for k, v in scores.items()}
    result.update(
        epochs=s.epochs,
        train_seconds=round(trained - start, 1),
        eval_seconds=round(time.perf_counter() - trained, 1),
        model=str(out / "model.pt"),
    )
    return result


def run(
    cfg: Config, store: RunStore | None = None, labels: str = "pseudo", progress: bool = True
) -> dict[str, Any]:
    """Stage "segmentation" (``labels="pseudo"``) or "segmentation_gt" (``labels="gt"``, the ceiling).

    With pseudo labels the pseudo stage runs first if it is not done (and, through it, the CAM
    and classifier stages).

    Returns:
        :func:`train`'s dict plus ``labels``.
    """
    if labels not in LABELS:
        raise ValueError(f"labels={labels!r} is not one of: {', '.join(LABELS)}")
    store = store or RunStore.for_config(cfg)
    device = pick_device(cfg.device)
    label_dir = None
    if labels == "pseudo":
        pseudo.run(cfg, store, progress=progress)
        label_dir = pseudo.labels_dir(store)
    with store.stage(LABELS[labels], cfg, device=str(device), keep=("checkpoint.pt",)) as st:
        if not st.done:
            st.result = {"labels": labels, **train(cfg, st.path, device, label_dir, progress)}
    return st.result


def load_segnet(cfg: Config, path: str | Path, device: torch.device | str = "cpu") -> SegNet:
    """A trained :class:`SegNet` of ``cfg`` from its ``model.pt``, in eval mode."""
    from .models import load_state_checked

    model = build_segnet(cfg)
    load_state_checked(model, torch.load(path, map_location=device, weights_only=True), path)
    return channels_last(model, device).eval()


@torch.no_grad()
def examples(cfg: Config, store: RunStore, samples: Sequence[dict[str, Any]]) -> list[list[np.ndarray]]:
    """Rows of [image, ground truth, prediction trained on pseudo labels, on ground truth] for plotting.

    Args:
        samples: dataset items without transform (``img`` uint8 (3, H, W), ``mask``).
    """
    from .plots import colorize, to_hwc_uint8

    norm = eval_transform()
    models = [load_segnet(cfg, store.path(LABELS[k]) / "model.pt") for k in ("pseudo", "gt")]
    rows = []
    for s in samples:
        x = norm({"img": s["img"]})["img"][None]
        preds = [
            predict(m, x, cfg.segmentation.test_scales, cfg.segmentation.test_flip)[0].argmax(0)
            for m in models
        ]
        rows.append([to_hwc_uint8(s["img"]), colorize(s["mask"]), *(colorize(p) for p in preds)])
    return rows
