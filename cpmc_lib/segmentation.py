"""Stages "segmentation" and "segmentation_gt": a DeepLab network trained on pseudo labels or on ground truth.

The last step of every WSSS pipeline: a fully convolutional segmentation network is trained on
the pseudo labels (cross-entropy, 255 ignored) and scored on the val split against ground truth.
Training the *same* network with the *same* schedule on the ground-truth masks of the same images
gives the fully supervised ceiling that the WSSS result is compared with. Both train on the
segmentation split, ``cfg.seg_split()`` (VOC: train_aug, 10,582 images, its masks SBD's
``SegmentationClassAug``; by default the cam split).

The network is :class:`cpmc_lib.models.SegNet` (a DeepLab head, V3's ASPP or V2's, over the last
stage of a timm backbone, built by :func:`cpmc_lib.models.build_segnet`). Its backbone starts from
ImageNet weights where a config gives them (``pretrained``, ``weights``) and otherwise, on the
synthetic default, from the same ImageNet stand-in as the classifier (the "pretrain" stage,
``segmentation.stand_in``): both networks, weak and full, start alike. With pseudo labels the stage
reads them from the run store's finished "pseudo" stage and stops with an error naming the
command that makes them when they are missing (:func:`cpmc_lib.pipeline.ensure` runs the stages
in order).

Training uses :func:`cpmc_lib.engine.fit` (per-epoch checkpoint, resume) with SGD, poly learning
rate, and random scale / crop / flip applied jointly to image and label
(:func:`cpmc_lib.transforms.train_transform`). Testing optionally fuses several scales and the
flipped image (softmax averaged) and, with ``test_crf``, scores the output after the dense CRF as
well, with the kernels of the ``crf`` section: IRN's pseudo-label kernels, not deeplab-pytorch's own
post-processing values (``book/reproducing_voc_coco.md`` lists both).

Outputs: ``runs/<run>/segmentation/`` (:func:`run`, on pseudo labels) or
``runs/<run>/segmentation_gt/`` (:func:`run_gt`, on ground truth), each with ``model.pt``,
``checkpoint.pt``, ``history.json`` and the manifest whose result is :func:`train`'s dict.

Example:
    >>> result = run_gt(cfg, store)  # doctest: +SKIP
    >>> result["val_miou"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from . import distributed
from .config import Config, CrfConfig, SegmentationConfig
from .crf import crf_map
from .datasets import build_dataset, collate
from .diagnostics import LabelPathologyMeter
from .engine import fit, poly_lr
from .io import IGNORE_INDEX, load_torch, read_mask_png, save_json, save_torch
from .metrics import ConfusionMeter
from .models import SegNet, build_segnet, load_state_checked, load_weights
from .progress import tqdm
from .runtime import channels_last, loader_options, pick_device, seed_everything, to_device, worker_init_fn
from .transforms import denormalize, eval_transform, train_transform

if TYPE_CHECKING:
    from .store import RunStore

__all__ = [
    "MaskFolderDataset",
    "evaluate",
    "examples",
    "load_segnet",
    "make_optimizer",
    "predict",
    "run",
    "run_gt",
    "segmentation_loss",
    "train",
    "training_set",
]

def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pixel cross-entropy, 255 ignored: (B, K, H, W) logits, (B, H, W) int64 mask."""
    return F.cross_entropy(logits.float(), mask, ignore_index=IGNORE_INDEX)


def make_optimizer(model: SegNet, s: SegmentationConfig) -> torch.optim.SGD:
    """SGD with momentum over ``segmentation.param_groups``; frozen BatchNorm parameters left out.

    ``"backbone_head"``: the backbone at lr, the head at ``head_lr_mult`` x lr, one weight decay.
    ``"deeplab"``: deeplab-pytorch's groups (its ``get_params`` "1x", "10x", "20x"): backbone weights
    at lr, head weights at ``head_lr_mult`` x lr, head biases at twice that; biases (and other 1-d
    parameters) get no weight decay.
    """
    frozen = {id(p) for p in model.frozen_bn_parameters()}
    backbone = [p for p in model.backbone.parameters() if id(p) not in frozen]
    head = list(model.head.parameters())
    if s.param_groups == "backbone_head":
        groups = [{"params": backbone, "lr": s.lr}, {"params": head, "lr": s.lr * s.head_lr_mult}]
    else:
        def split(params, lr):  # weights decay; biases and 1-d parameters do not
            return [{"params": [p for p in params if p.ndim > 1], "lr": lr},
                    {"params": [p for p in params if p.ndim <= 1], "lr": 2 * lr if params is head else lr,
                     "weight_decay": 0.0}]  # fmt: skip

        groups = [*split(backbone, s.lr), *split(head, s.lr * s.head_lr_mult)]
        groups = [g for g in groups if g["params"]]
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
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Per image: (normalised img (3, H, W), probs (K, H, W), ground truth (H, W), diagnostic codes
    (H, W) or None where the dataset has none), all on the CPU."""
    model.eval()
    for batch in loader:
        imgs, masks = batch["img"], batch["mask"]
        diags = batch.get("diag", [None] * len(masks))
        if isinstance(imgs, list):  # sizes differ: one image at a time
            probs = [predict(model, x[None].to(device), scales, flip)[0].cpu() for x in imgs]
        else:
            probs = predict(model, imgs.to(device), scales, flip).cpu()
        yield from zip(imgs, probs, masks, diags, strict=True)


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
    reduce: bool = True,
) -> dict[str, Any]:
    """mIoU of ``model`` on ``dataset`` (built with :func:`~cpmc_lib.transforms.eval_transform`).

    Under ``torchrun`` each rank passes its shard (:func:`cpmc_lib.distributed.shard_dataset`) and
    the confusion matrices are summed over the ranks, so every rank returns the scores of the
    whole split (the pseudo stage's scheme). ``reduce=False`` scores ``dataset`` on this rank
    alone (the learning curve, which rank 0 draws on the whole split).

    Returns:
        dict with ``miou``, ``iou``, ``precision``, ``recall`` (of :func:`cpmc_lib.metrics.miou`'s
        confusion protocol); ``pathology`` (:class:`~cpmc_lib.diagnostics.LabelPathologyMeter`:
        recall of body, part and atypical pixels, percent of context and distractor pixels labelled
        object) and ``pathology_by_class`` (the recalls per class) when the dataset has diagnostic
        masks (the synthetic benchmark); and, when ``crf``
        is given, ``miou_crf``, ``precision_crf``, ``recall_crf`` of the dense-CRF post-processed
        predictions.
    """
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    bar = tqdm(loader, desc="evaluate", disable=not progress, leave=False)
    plain, pathology = ConfusionMeter(num_classes), LabelPathologyMeter()

    def scored() -> Iterator[tuple[np.ndarray, np.ndarray, torch.Tensor]]:
        for img, probs, gt, diag in _predictions(model, bar, device, scales, flip):
            pred = probs.argmax(0)
            plain.update(pred, gt)
            if diag is not None:
                pathology.update(pred, gt, diag)
            if crf is not None:  # CRF input, ground truth as the tag
                yield denormalize(img).permute(1, 2, 0).numpy(), probs.numpy(), gt

    meters = {"": plain}
    if crf is None:
        for _ in scored():
            pass
    else:
        meters["_crf"] = ConfusionMeter(num_classes)
        for post, gt in crf_map(scored(), crf, progress=False):
            meters["_crf"].update(post.argmax(0), gt)
    if reduce:
        for meter in meters.values():
            meter.confusion = distributed.all_reduce_tensor(meter.confusion)
        pathology.all_reduce()
    scores = plain.compute()
    if "_crf" in meters:
        crf_scores = meters["_crf"].compute()
        scores.update({f"{k}_crf": crf_scores[k] for k in ("miou", "iou", "precision", "recall")})
    if pathology.pixels:
        scores["pathology"] = pathology.compute()
        scores["pathology_by_class"] = pathology.compute_by_class()
    return scores


def training_set(cfg: Config, label_dir: str | Path | None = None, transform=None) -> Dataset:
    """The images of the segmentation split ``cfg.seg_split()`` with the masks to train on.

    Args:
        label_dir: folder of pseudo label PNGs; None: the ground-truth masks (the ceiling).
        transform: applied to each sample after its mask is set.

    Raises:
        DatasetError: ground truth asked for and an image has no mask (the file named), rather than
            training silently on an all-ignore mask.
        FileNotFoundError: an image has no pseudo label in ``label_dir``.
    """
    if label_dir is not None:
        return MaskFolderDataset(build_dataset(cfg, cfg.seg_split()), label_dir, transform)
    ds = build_dataset(cfg, cfg.seg_split(), transform)
    ds.require_masks(
        "the fully supervised ceiling trains on the masks of the segmentation split (data.seg_split). "
        "For VOC's train_aug they are SBD's SegmentationClassAug (IRN's voc12 setup): extract "
        "SegmentationClassAug.zip into the dataset root, or set data.seg_split to a split whose images "
        "all have masks (e.g. train)"
    )
    return ds


def train(
    cfg: Config, out: str | Path, device: torch.device, label_dir: str | Path | None = None, progress: bool = True,
    init: str | Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Train ``cfg.segmentation``'s network into ``out`` (resuming from its ``checkpoint.pt``) and score it.

    Args:
        label_dir: folder of pseudo label PNGs for the ``cfg.seg_split()`` images; None trains
            on their ground-truth masks (the fully supervised ceiling).
        init: backbone weights to start from (the ImageNet stand-in's ``weights.pt``), loaded
            after ``build_segnet`` (:func:`~cpmc_lib.models.load_weights`); None keeps its start.

    Returns:
        dict with ``val_miou``, ``val_precision``, ``val_recall``, ``val_iou`` (per class),
        ``val_miou_crf`` (with ``test_crf``), ``curve`` (val mIoU after each of the last ``curve_last``
        epochs, with ``curve``) and its ``curve_epochs``, ``epochs``, ``train_split`` and
        ``train_images`` (what it trained on), ``train_seconds``, ``eval_seconds``, ``model``.
    """
    start = time.perf_counter()
    out, s = Path(out), cfg.segmentation
    transform = train_transform(s.crop_size, scale=tuple(s.scale), color_jitter=s.color_jitter)
    train_set = training_set(cfg, label_dir, transform)  # before the network: a missing mask fails fast
    model = _initial_network(cfg, device, init)
    if len(train_set) < s.batch_size:
        raise ValueError(f"{len(train_set)} training images is fewer than segmentation.batch_size={s.batch_size}")

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

    val_set = build_dataset(cfg, cfg.data.val_split, eval_transform())
    last: dict[str, Any] = {}  # the final epoch's scores, reused when no CRF score is asked for

    def validate(epoch: int, model: nn.Module) -> dict[str, float]:  # the learning curve: did it converge?
        if s.curve_last and epoch < s.epochs - s.curve_last:
            return {}
        distributed.sync_buffers(model)  # every rank scores its share of val with rank 0's network
        scores = evaluate(model, distributed.shard_dataset(val_set), device, cfg.data.num_classes, s.test_scales,
                          s.test_flip, None, s.batch_size, progress=False)  # fmt: skip
        last.update(epoch=epoch, scores=scores)
        return {"val_miou": scores["miou"]}

    optimizer = make_optimizer(model, s)
    steps = s.epochs * (len(train_set) // s.batch_size)
    history = fit(
        model, make_loader, step, optimizer, s.epochs, out / "checkpoint.pt", cfg.seed, device,
        scheduler=poly_lr(optimizer, steps), on_epoch_end=validate if s.curve else None,
        progress=progress, desc="segmentation",
    )  # fmt: skip
    trained = time.perf_counter()
    if distributed.is_main():
        save_json(out / "history.json", history)
        save_torch(out / "model.pt", model.state_dict())
    if last.get("epoch") == s.epochs - 1 and not s.test_crf:
        scores = last["scores"]  # the curve's last point is the final score
    else:
        scores = _final_scores(cfg, model, val_set, device, progress)
    result = {f"val_{k}": v for k, v in scores.items()}
    result.update(
        curve=[h["val_miou"] for h in history if "val_miou" in h],
        curve_epochs=[h["epoch"] for h in history if "val_miou" in h],
        epochs=s.epochs,
        train_split=cfg.seg_split(),
        train_images=len(train_set),
        train_seconds=round(trained - start, 1),
        eval_seconds=round(time.perf_counter() - trained, 1),
        model=str(out / "model.pt"),
    )
    return result


def _initial_network(cfg: Config, device: torch.device, init: str | Path | None) -> SegNet:
    """The network before training: seeded initial weights, the backbone from ``init`` when given."""
    seed_everything(cfg.seed)  # the initial weights
    model = build_segnet(cfg)
    if init is not None:
        try:
            load_weights(model, init)
        except ValueError as e:  # the stand-in is the classifier's backbone
            raise ValueError(
                f"{e}. The ImageNet stand-in has the classifier's backbone: give segmentation the same "
                "backbone, layers and channels, or start it from scratch with segmentation.stand_in=false"
            ) from e
    return channels_last(model, device)


def _final_scores(cfg: Config, model: SegNet, val_set: Dataset, device: torch.device, progress: bool) -> dict:
    """The trained network on the val split with the test-time options (and the dense CRF with ``test_crf``).

    Every rank scores its shard of the val split with rank 0's network: DDP keeps the weights
    equal, but each rank's last batch moved its own BatchNorm statistics.
    """
    s = cfg.segmentation
    distributed.sync_buffers(model)
    return evaluate(
        model, distributed.shard_dataset(val_set), device, cfg.data.num_classes, s.test_scales,
        s.test_flip, cfg.crf if s.test_crf else None, s.batch_size, progress and distributed.is_main(),
    )  # fmt: skip


def run(cfg: Config, store: RunStore, progress: bool = True) -> dict[str, Any]:
    """Stage "segmentation": the network trained on the pseudo labels of the run store's finished
    "pseudo" stage (``python -m cpmc_lib pseudo`` makes them).

    Returns:
        :func:`train`'s dict plus ``labels`` ("pseudo").
    """
    label_dir = store.require("pseudo", cfg, "pseudo labels") / "labels"
    return _run(cfg, store, "segmentation", label_dir, progress)


def run_gt(cfg: Config, store: RunStore, progress: bool = True) -> dict[str, Any]:
    """Stage "segmentation_gt": the same network, schedule and images trained on the ground-truth
    masks (the fully supervised ceiling).

    Returns:
        :func:`train`'s dict plus ``labels`` ("gt").
    """
    return _run(cfg, store, "segmentation_gt", None, progress)


def _run(cfg: Config, store: RunStore, stage: str, label_dir: Path | None, progress: bool) -> dict[str, Any]:
    device = pick_device(cfg.device)
    with store.stage(stage, cfg, device=str(device), keep=("checkpoint.pt",)) as st:
        if not st.done:
            init = None
            if cfg.segmentation_uses_pretrain_stage():  # the ImageNet stand-in
                init = store.require("pretrain", cfg, "pretrained backbone") / "weights.pt"
            labels = "gt" if label_dir is None else "pseudo"
            st.result = {"labels": labels, **train(cfg, st.path, device, label_dir, progress, init)}
    return st.result


def load_segnet(cfg: Config, path: str | Path, device: torch.device | str = "cpu") -> SegNet:
    """A trained :class:`SegNet` of ``cfg`` from its ``model.pt``, in eval mode."""
    model = build_segnet(cfg, pretrained=False)
    load_state_checked(model, load_torch(path, "a trained segmentation network", device), path)
    return channels_last(model, device).eval()


@torch.no_grad()
def examples(
    cfg: Config, store: RunStore, samples: Sequence[dict[str, Any]]
) -> tuple[list[list[np.ndarray]], list[int]]:
    """Rows of [image, ground truth, prediction trained on pseudo labels, on ground truth] for plotting,
    and the classes any of their masks shows (for the figure's legend).

    Args:
        samples: dataset items without transform (``img`` uint8 (3, H, W), ``mask``).
    """
    from .plots import colorize, to_hwc_uint8

    norm = eval_transform()
    names = build_dataset(cfg, cfg.data.val_split).class_names  # the mask colours follow the class names
    models = [load_segnet(cfg, store.path(k) / "model.pt") for k in ("segmentation", "segmentation_gt")]
    rows, shown = [], set()
    for s in samples:
        x = norm({"img": s["img"]})["img"][None]
        preds = [
            predict(m, x, cfg.segmentation.test_scales, cfg.segmentation.test_flip)[0].argmax(0)
            for m in models
        ]
        rows.append([to_hwc_uint8(s["img"]), colorize(s["mask"], names), *(colorize(p, names) for p in preds)])
        shown |= {int(v) for m in (s["mask"], *preds) for v in np.unique(np.asarray(m))}
    return rows, sorted(shown)
