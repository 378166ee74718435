"""Wall time and peak memory of each pipeline stage, every stage computed from scratch.

Each stage of :func:`cpmc_lib.pipeline.run` (data, pretrain when the classifier starts from the
ImageNet stand-in, classifier, cams_<method> for every method of ``CAM_REPORT``, pseudo, seg_wsss,
seg_full) runs in its own child process, in order, in a fresh
work folder (``runs/bench_pipeline`` and, for the synthetic benchmark, its data under the same
folder), so nothing is reused from earlier runs while each stage still reads what the previous
ones wrote. Per stage:

- ``seconds``: the stage call itself, timed inside the child;
- ``wall_s``: the child process, imports and reloading the model included;
- ``cpu_s``: the child's user + system CPU seconds (``os.wait4``'s rusage), which other load
  on the machine does not inflate as it does wall time;
- ``peak_rss_mb``: the child's peak resident memory (``os.wait4``'s rusage); the first row,
  ``imports``, is a child that runs no stage: the floor (Python, torch and the library) that every
  stage's figure includes;
- ``cuda_max_mb``: ``torch.cuda.max_memory_allocated`` in the child (CUDA only).

Finally :func:`cpmc_lib.pipeline.run` runs once more in this process, finds every stage done and
writes ``metrics.json`` with the scores and each stage's recorded ``stage_seconds``.

Run by hand (the default benchmark trains two networks: expect tens of minutes on a few cores)::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_pipeline.py [--config C] [--quick] [--json] [--device cuda]
    PYTHONPATH=. .venv/bin/python benchmarks/bench_pipeline.py --config configs/voc.yaml --estimate [--gpu-tflops T]

``--quick`` does not run the config in full: it runs every stage on a slice of it (``--slice``
training images, half as many val images, one epoch, batch 2, no loader workers, no weight
download; crop sizes, scales, networks and every other setting as configured) and
**extrapolates** each stage to the full config: seconds per image x images (:func:`workload`).
Training and evaluation are rated separately where the stage reports both (segmentation);
elsewhere an evaluated image counts a third of a trained one (one forward pass against forward
and backward). Fixed costs (building the network, loading weights) are scaled with the images,
so small slices overestimate. It is an estimate for planning, e.g. of a GPU run of
``configs/synth-voc-scale.yaml`` from a CPU, never a measurement; the table says so.

``--estimate`` runs no stage: it estimates the GPU time of each stage from the floating-point
operations of its networks (:func:`flop_estimate`). The config's networks are built on PyTorch's
``meta`` device (nothing computed, nothing downloaded) and one image goes through what the stage
does to it under :class:`~torch.utils.flop_counter.FlopCounterMode`: a training step at the crop
size (forward and backward), an evaluated image at every scale and flip the stage runs, the
Grad-CAM family's backward pass per present class. FLOPs per image x images (all epochs, every
evaluation pass) / ``--gpu-tflops`` gives GPU hours. That throughput is an **assumption**
(:data:`GPU_TFLOPS`), not a property of any GPU measured here. Work that is not a network
(generating or loading images, the dense CRF on the CPU, the CPMC maps' prototype k-means,
elementwise layers, the optimiser) is not counted; the table names it per stage, and with
``--quick --estimate`` it also shows the CPU seconds per image of the slice for the stages that
are not a network (data, pseudo). On a machine with a GPU, run without ``--estimate`` to measure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cpmc_lib import cams, classifier, pipeline, pretrain, pseudo, segmentation, synth
from cpmc_lib.cam_methods import CAM_METHODS, GradCamMethod, _gradients_from, joint_group
from cpmc_lib.config import Config, load_config
from cpmc_lib.datasets import DatasetError, build_dataset
from cpmc_lib.models import CamNet, build_model, build_segnet
from cpmc_lib.pretrain import PretrainNet
from cpmc_lib.runtime import pick_device
from cpmc_lib.store import RunStore


def stages(cfg: Config) -> list[str]:
    """The stages :func:`cpmc_lib.pipeline.run` computes for ``cfg``, in order."""
    first = ["data", "pretrain"] if cfg.uses_pretrain_stage() else ["data"]
    return [
        *first,
        "classifier",
        *(f"cams_{m}" for m in pipeline.CAM_REPORT),
        "pseudo",
        "seg_wsss",
        "seg_full",
    ]


def run_stage(cfg: Config, stage: str) -> dict:
    """Run one stage of ``cfg`` (earlier stages must be done in its run folder); its result dict."""
    if stage == "imports":  # the baseline: a child that only imports
        return {}
    if stage == "data":
        if cfg.data.kind == "synth":
            return synth.ensure_generated(cfg.synth, cfg.data_root(), progress=False)
        build_dataset(cfg, cfg.data.train_split)
        return {}
    if stage == "pretrain":
        return pretrain.run(cfg, RunStore.for_config(cfg), progress=False)
    if stage == "classifier":
        return classifier.run(cfg, RunStore.for_config(cfg), progress=False)
    if stage.startswith("cams_"):
        return cams.run(cfg, RunStore.for_config(cfg), method=stage.removeprefix("cams_"), progress=False)
    if stage == "pseudo":
        return pseudo.run(cfg, RunStore.for_config(cfg), progress=False)
    if stage == "seg_wsss":
        return segmentation.run(cfg, RunStore.for_config(cfg), progress=False)
    if stage == "seg_full":
        return segmentation.run_gt(cfg, RunStore.for_config(cfg), progress=False)
    raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(stages(cfg))}")


def split_names(cfg: Config) -> dict[str, str]:
    """The split each role reads: classifier training, CAMs, segmentation training, val."""
    d = cfg.data
    return {"train": d.train_split, "cam": d.cam_split, "seg": cfg.seg_split(), "val": d.val_split}


def split_sizes(cfg: Config) -> dict[str, int]:
    """Images of the train, cam, seg and val splits of ``cfg`` (the generator's counts for synthetic data)."""
    names = split_names(cfg)
    if cfg.data.kind == "synth" and set(names.values()) <= {"train", "val"}:
        counts = {"train": cfg.synth.train, "val": cfg.synth.val}
        return {k: counts[v] for k, v in names.items()}
    return {k: len(build_dataset(cfg, v).names) for k, v in names.items()}


def workload(cfg: Config, stage: str, sizes: dict[str, int]) -> dict[str, float]:
    """Images ``stage`` trains on (``train``, summed over epochs) and evaluates (``eval``) for ``cfg``.

    ``sizes`` is :func:`split_sizes`'s dict. Training counts what the loaders yield (drop_last);
    the data stage of the synthetic benchmark counts the generated images as evaluated ones.
    """
    c, s, p = cfg.classifier, cfg.segmentation, cfg.pretrain
    if stage == "data":
        return {"eval": cfg.synth.train + cfg.synth.val if cfg.data.kind == "synth" else 0}
    if stage == "pretrain":
        return {"train": p.images // p.batch_size * p.batch_size * p.epochs, "eval": p.val_images}
    if stage == "classifier":
        return {"train": sizes["train"] // c.batch_size * c.batch_size * c.epochs, "eval": sizes["val"] * c.epochs}
    if stage == "pseudo":
        return {"eval": sizes["seg"]}
    if stage.startswith("cams_"):
        # The pseudo-label method's pass also maps the seg split's images outside the cam split
        # (VOC: train_aug's, a superset of train), unscored.
        extra = sizes["seg"] - sizes["cam"] if sizes["seg"] != sizes["cam"] else 0
        own = stage.removeprefix("cams_") == joint_group(cfg.pseudo.method)[0]
        return {"eval": sizes["cam"] + (extra if own else 0)}
    if stage.startswith("seg_"):
        return {"train": sizes["seg"] // s.batch_size * s.batch_size * s.epochs, "eval": sizes["val"]}
    return {}


EVAL_WEIGHT = 1 / 3  # an evaluated image against a trained one, where a stage reports no split


def extrapolate(measured: dict, slice_load: dict[str, float], full_load: dict[str, float]) -> float:
    """A stage's seconds on the full workload from its seconds on the slice (per image x images).

    Uses the stage's own ``train_seconds`` / ``eval_seconds`` when it reports them, else one
    rate with evaluated images weighted by :data:`EVAL_WEIGHT`. A stage without images keeps
    its measured seconds.
    """
    t, e = slice_load.get("train", 0), slice_load.get("eval", 0)
    if "train_seconds" in measured and "eval_seconds" in measured and t and e:
        return (measured["train_seconds"] / t * full_load.get("train", 0)
                + measured["eval_seconds"] / e * full_load.get("eval", 0))  # fmt: skip
    units = t + EVAL_WEIGHT * e
    if not units:
        return measured["seconds"]
    full = full_load.get("train", 0) + EVAL_WEIGHT * full_load.get("eval", 0)
    return measured["seconds"] / units * full


def extrapolate_stage(
    measured: dict, imports_cpu: float, slice_load: dict[str, float], full_load: dict[str, float]
) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a stage on the full workload, from one slice measurement.

    The CPU seconds are the child's less those of a child that only imports, scaled as the wall
    seconds are. A stage that did no work of its own (under a second: a CAM method made in an
    earlier method's pass) is not scaled.
    """
    cpu = max(measured["cpu_s"] - imports_cpu, 0.0)
    if measured["seconds"] < 1.0:
        return measured["seconds"], cpu
    wall = extrapolate(measured, slice_load, full_load)
    return wall, cpu * wall / measured["seconds"]


# --- --estimate: a GPU time estimate from counted floating-point operations ---------------------

# The assumed sustained throughput of one GPU, in TFLOP/s (--gpu-tflops). An ASSUMPTION, never a
# measurement: about a third of an A100's dense FP16/BF16 tensor-core peak (312 TFLOP/s; an
# H100 SXM's is 989), a share that convolutional networks trained under automatic mixed
# precision (as on CUDA here) often sustain at best, and only with the GPU never waiting for data.
GPU_TFLOPS = 100.0
# Classes present per image, for the Grad-CAM family's one backward pass per (image, class) pair
# (--classes-per-image): an assumption, most VOC images show one or two classes.
CLASSES_PER_IMAGE = 1.5
# Image size (H, W) of evaluated images where the config does not fix it (--image-size): VOC's
# images are at most 500 px, most 500 x 375 or 375 x 500; COCO's mostly 640 x 480.
IMAGE_HW = {"voc": (375, 500), "coco": (480, 640)}
# Split sizes when the dataset folder is absent: VOC 2012 (train_aug = with SBD) and the COCO 2014
# lists of the WSSS papers (images with at least one labelled object).
SPLIT_IMAGES = {
    ("voc", "train_aug"): 10582, ("voc", "train"): 1464, ("voc", "val"): 1449,
    ("coco", "train"): 82081, ("coco", "val"): 40137,
}  # fmt: skip
# Stages whose work is not a network: no FLOPs; the table shows CPU seconds per image (--quick).
NOT_NETWORK = ("data", "pseudo")


def uncounted(cfg: Config, stage: str) -> str:
    """The work of ``stage`` that FLOPs do not cover (besides loading and augmenting images)."""
    if stage == "data":
        return "generating the images (CPU)" if cfg.data.kind == "synth" else "reading the split lists"
    if stage == "pseudo":
        return "dense CRF of every cam image (CPU), thresholds, PNGs"
    if stage.startswith("cams_") and stage.removeprefix("cams_") == joint_group("proto")[0]:
        return "CPMC maps: prototype k-means and similarities per image"
    if stage.startswith("seg_") and cfg.segmentation.test_crf:
        return "dense CRF of the val images (CPU)"
    return ""


def count_flops(fn: Callable[[], Any]) -> float:
    """Floating-point operations of ``fn()`` as :class:`~torch.utils.flop_counter.FlopCounterMode`
    counts them: convolutions, matrix products and their backward passes, a multiply-add as 2;
    elementwise work (activations, BatchNorm, resizing, the optimiser step) is not counted."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def image_size(cfg: Config, hw: tuple[int, int] | None = None) -> tuple[int, int]:
    """(H, W) of an evaluated image: ``hw`` if given, the generator's size, else :data:`IMAGE_HW`."""
    if hw:
        return tuple(hw)
    if cfg.data.kind == "synth":
        return cfg.synth.size, cfg.synth.size
    return IMAGE_HW[cfg.data.kind]


def estimate_sizes(cfg: Config) -> tuple[dict[str, int], str]:
    """:func:`split_sizes` of ``cfg`` and where they come from; :data:`SPLIT_IMAGES` without the data."""
    try:
        return split_sizes(cfg), "counted"
    except (DatasetError, FileNotFoundError):
        names = split_names(cfg)
        try:
            return {k: SPLIT_IMAGES[cfg.data.kind, v] for k, v in names.items()}, "standard split sizes"
        except KeyError as e:
            raise ValueError(f"no data under {cfg.data_root()} and no standard size for split {e}") from None


def _train_pass(model: nn.Module, size: int) -> None:
    """A training step's network work on two meta images of ``size`` x ``size`` (a batch of one
    fails in BatchNorm layers that pool the image): forward and backward, every parameter trained."""
    out = model.train()(torch.zeros(2, 3, size, size, device="meta"))
    out = out["logits"] if isinstance(out, dict) else out
    sum(o.float().sum() for o in (out if isinstance(out, tuple) else (out,))).backward()


def _eval_passes(model: nn.Module, img: torch.Tensor, scales: Sequence[float], flip: bool) -> None:
    """Forward passes of multi-scale (+ flip) inference on ``img``, as CAMs and DeepLab's test run."""
    H, W = img.shape[-2:]
    with torch.no_grad():
        for s in scales:
            x = img.new_zeros(1, 3, int(H * s), int(W * s))
            model.eval()(torch.cat([x, x.flip(-1)]) if flip else x)


def _gradcam_pass(model: CamNet, img: torch.Tensor, scales: Sequence[float], flip: bool) -> None:
    """Grad-CAM's work for one (image, class) pair: per view a forward and a backward pass from the
    logits down to the last stage only (:func:`cpmc_lib.cam_methods.explain`)."""
    H, W = img.shape[-2:]
    with torch.enable_grad(), _gradients_from(model, model.last_stage):
        for s in scales:
            x = img.new_zeros(1, 3, int(H * s), int(W * s))
            x = torch.cat([x, x.flip(-1)]) if flip else x
            model.eval()(x)["logits"][:, 0].sum().backward()


def stage_flops(cfg: Config, hw: tuple[int, int], classes_per_image: float) -> dict[str, dict[str, float]]:
    """FLOPs per trained (``train``) and per evaluated (``eval``) image of every stage of ``cfg``.

    The networks of the config are built on PyTorch's ``meta`` device (shapes without values:
    nothing is computed, no weight is downloaded) and run once on one image under
    :func:`count_flops`: a training step at the crop size, forward and backward; an evaluated
    image of size ``hw`` at every scale (and flip) the stage runs. A CAM method made in an earlier
    method's pass (:data:`~cpmc_lib.cam_methods.JOINT_METHODS`) costs 0. The Grad-CAM family runs
    one backward pass per present class: ``classes_per_image`` of them.
    """
    c, s, p = cfg.classifier, cfg.segmentation, cfg.pretrain
    meta = torch.device("meta")
    with meta:
        cls = build_model(cfg, pretrained=False)
        seg = build_segnet(cfg, pretrained=False)
    img = torch.zeros(1, 3, *hw, device=meta)
    flops = {"data": {}, "pseudo": {}}
    if cfg.uses_pretrain_stage():
        with meta:
            net = PretrainNet(build_model(cfg, pretrained=False).backbone)
        flops["pretrain"] = {
            "train": count_flops(lambda: _train_pass(net, p.size)) / 2,
            "eval": count_flops(lambda: _eval_passes(net, torch.zeros(1, 3, p.size, p.size, device=meta), (1.0,), False)),
        }  # fmt: skip
    flops["classifier"] = {
        "train": count_flops(lambda: _train_pass(cls, c.crop_size)) / 2,
        "eval": count_flops(lambda: _eval_passes(cls, img, (1.0,), False)),
    }  # fmt: skip
    made = set()
    for m in pipeline.CAM_REPORT:
        if m in made:
            flops[f"cams_{m}"] = {"eval": 0.0}
        elif m in CAM_METHODS and issubclass(CAM_METHODS[m], GradCamMethod):
            one = count_flops(lambda: _gradcam_pass(cls, img, cfg.cams.scales, cfg.cams.flip))
            flops[f"cams_{m}"] = {"eval": one * classes_per_image}
        else:
            one = count_flops(lambda: _eval_passes(cls, img, cfg.cams.scales, cfg.cams.flip))
            flops[f"cams_{m}"] = {"eval": one}
        made |= set(joint_group(m))
    seg_flops = {
        "train": count_flops(lambda: _train_pass(seg, s.crop_size)) / 2,
        "eval": count_flops(lambda: _eval_passes(seg, img, s.test_scales, s.test_flip)),
    }  # fmt: skip
    flops["seg_wsss"], flops["seg_full"] = seg_flops, dict(seg_flops)
    return {stage: flops[stage] for stage in stages(cfg)}


def flop_workload(cfg: Config, stage: str, sizes: dict[str, int]) -> dict[str, float]:
    """:func:`workload` with every evaluation pass counted: segmentation scores val after each of
    its last ``segmentation.curve_last`` epochs (``segmentation.curve``; 0: every epoch) and once more
    at the end unless that last curve point is reused."""
    load = workload(cfg, stage, sizes)
    s = cfg.segmentation
    if stage.startswith("seg_"):
        final = 0 if s.curve and not s.test_crf else 1
        scored = min(s.curve_last or s.epochs, s.epochs) if s.curve else 0
        load["eval"] = sizes["val"] * (scored + final)
    if stage == "data":
        load = {}
    return load


def flop_estimate(
    cfg: Config,
    sizes: dict[str, int],
    hw: tuple[int, int],
    gpu_tflops: float = GPU_TFLOPS,
    classes_per_image: float = CLASSES_PER_IMAGE,
) -> dict[str, dict[str, Any]]:
    """Per stage: FLOPs per image (:func:`stage_flops`), images (:func:`flop_workload`), total FLOPs
    and ``gpu_hours`` = total / (``gpu_tflops`` x 1e12) / 3600 on one GPU. The network's work only."""
    per_image = stage_flops(cfg, hw, classes_per_image)
    out = {}
    for stage, f in per_image.items():
        load = flop_workload(cfg, stage, sizes)
        total = sum(f.get(k, 0.0) * load.get(k, 0) for k in ("train", "eval"))
        out[stage] = {
            "flops_per_train_image": f.get("train", 0.0), "flops_per_eval_image": f.get("eval", 0.0),
            "images": load, "total_flops": total, "gpu_hours": total / (gpu_tflops * 1e12) / 3600,
        }  # fmt: skip
        out[stage]["uncounted"] = uncounted(cfg, stage)
    return out


def slice_overrides(cfg: Config, images: int) -> list[str]:
    """``--set`` overrides that shrink ``cfg`` to ``images`` training images for ``--quick``."""
    val = max(1, images // 2)
    if cfg.data.kind == "synth":
        data = [f"synth.train={images}", f"synth.val={val}"]
    else:
        data = [f"data.limit={images}"]
    return [
        *data,
        "classifier.epochs=1", "classifier.batch_size=2", "classifier.num_workers=0",
        "classifier.pretrained=false", "segmentation.epochs=1", "segmentation.batch_size=2",
        "segmentation.num_workers=0", "segmentation.pretrained=false",
        f"pretrain.images={images}", f"pretrain.val_images={val}", "pretrain.epochs=1",
        "pretrain.batch_size=2",
    ]  # fmt: skip


def _child(config: str, overrides: list[str], stage: str) -> None:
    """Child process: run ``stage``; print ``{"seconds", "cuda_max_mb"}`` (and the stage's
    ``train_seconds`` / ``eval_seconds`` when it has them) as JSON."""
    import torch

    cfg = load_config(config, overrides)
    device = pick_device(cfg.device)
    t0 = time.perf_counter()
    result = run_stage(cfg, stage) or {}
    seconds = time.perf_counter() - t0
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    parts = {k: result[k] for k in ("train_seconds", "eval_seconds") if k in result}
    print(json.dumps({"seconds": round(seconds, 2), "cuda_max_mb": cuda and round(cuda, 1), **parts}))


def measure_stage(config: str, overrides: list[str], stage: str) -> dict[str, float | None]:
    """Run ``stage`` in a child process: its own timing, wall time and peak RSS (MiB)."""
    args = [sys.executable, __file__, "--config", config, "--stage", stage]
    args += [a for o in overrides for a in ("--set", o)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # the rusage of this child alone
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} failed (exit {proc.returncode}); see its error above")
    per_mib = 2**20 if sys.platform == "darwin" else 2**10  # macOS reports bytes, Linux KiB
    result = json.loads(out.strip().splitlines()[-1])
    cpu = usage.ru_utime + usage.ru_stime  # unlike wall time, not inflated by other processes
    return {**result, "wall_s": round(wall, 2), "cpu_s": round(cpu, 1),
            "peak_rss_mb": round(usage.ru_maxrss / per_mib, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", default=None, help="default: configs/default.yaml (quick: configs/quick.yaml)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the config's)")
    parser.add_argument(
        "--quick", action="store_true",
        help="run a slice of the config and extrapolate each stage (seconds per image x images)",
    )
    parser.add_argument("--slice", type=int, default=4, help="--quick: training images in the slice")
    parser.add_argument(
        "--workdir", default=None, help="fresh folder for runs and data (default: a temp folder)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (default: deleted)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--estimate", action="store_true",
        help="GPU time from counted FLOPs and an assumed throughput (runs nothing; with --quick, "
        "also the slice, for the CPU seconds per image of the stages that are not a network)",
    )  # fmt: skip
    parser.add_argument(
        "--gpu-tflops", type=float, default=GPU_TFLOPS,
        help=f"--estimate: ASSUMED sustained TFLOP/s of one GPU (default {GPU_TFLOPS:g}: about a third "
        "of an A100's dense FP16/BF16 peak of 312, under AMP)",
    )  # fmt: skip
    parser.add_argument(
        "--classes-per-image", type=float, default=CLASSES_PER_IMAGE,
        help=f"--estimate: assumed present classes per image, for Grad-CAM (default {CLASSES_PER_IMAGE:g})",
    )  # fmt: skip
    parser.add_argument(
        "--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
        help="--estimate: size of an evaluated image (default: synth.size, VOC 375 500, COCO 480 640)",
    )  # fmt: skip
    parser.add_argument("--stage", default=None, help=argparse.SUPPRESS)  # internal: the child process
    args = parser.parse_args(argv)
    config = args.config or "configs/default.yaml"
    if args.stage:
        _child(config, args.overrides, args.stage)
        return {}
    if args.estimate and not args.quick:  # nothing runs: counted FLOPs / assumed throughput
        result = estimate_result(args, config, load_config(config, args.overrides))
        if args.json:
            print(json.dumps(result))
        else:
            print_estimate(result)
        return result

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_pipeline_"))
    if work.exists() and any(work.iterdir()):  # finished stages there would be reused, not measured
        parser.error(f"--workdir {work} is not empty")
    overrides = ["run=bench_pipeline", f"runs_dir={work / 'runs'}", *args.overrides]
    if load_config(config, args.overrides).data.kind == "synth":
        overrides.append(f"data.root={work / 'data'}")
    if args.device:
        overrides.append(f"device={args.device}")
    full_cfg = load_config(config, overrides)
    if args.quick:
        overrides += slice_overrides(full_cfg, args.slice)
    cfg = load_config(config, overrides)
    try:
        measured = {}
        for stage in ["imports", *stages(cfg)]:
            measured[stage] = measure_stage(config, overrides, stage)
            if not args.json:
                print(f"  {stage} done in {measured[stage]['wall_s']:.1f} s", file=sys.stderr)
        metrics = pipeline.run(cfg, progress=False)  # every stage is done: gathers and writes metrics
        if args.quick:  # per stage: seconds per image on the slice x images of the full config
            slice_sizes, full_sizes = split_sizes(cfg), split_sizes(full_cfg)
            for stage, m in measured.items():
                if stage == "imports":
                    continue
                slice_load, full_load = workload(cfg, stage, slice_sizes), workload(full_cfg, stage, full_sizes)
                wall, cpu = extrapolate_stage(m, measured["imports"]["cpu_s"], slice_load, full_load)
                m.update(slice_images=slice_load, full_images=full_load,
                         extrapolated_s=round(wall, 1), extrapolated_cpu_s=round(cpu, 1))  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "device": str(pick_device(cfg.device)),
        "config": config,
        "overrides": args.overrides,
        "stages": measured,
        "total_seconds": round(sum(s["seconds"] for s in measured.values()), 1),
        "peak_rss_mb": max(s["peak_rss_mb"] for s in measured.values()),
        "stage_seconds": metrics["stage_seconds"],  # what each stage recorded in metrics.json
        "cams_miou": {m: r["miou"] for m, r in metrics["cams"].items()},
        "seg_miou": {k: metrics["seg"][k]["miou"] for k in ("wsss", "full")},
        "workdir": str(work) if args.keep else None,
    }
    if args.quick:
        for key in ("extrapolated_s", "extrapolated_cpu_s"):
            result[key.replace("_s", "_total_s", 1)] = round(sum(m.get(key, 0) for m in measured.values()), 1)
        result["note"] = (
            f"EXTRAPOLATION, not a measurement: every stage ran on a {args.slice}-image slice "
            f"(1 epoch, batch 2) on {result['device']}; extrapolated_s = seconds per image x images "
            "of the full config. Peak memory is the slice's."
        )
    if args.estimate:  # with the CPU seconds per image of the stages that are not a network
        result["estimate"] = estimate_result(args, config, full_cfg, not_network_cpu(measured))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{config} {' '.join(args.overrides)} on {result['device']}")
        if args.quick:
            print(result["note"])
        extra = f" {'images':>14} {'full images':>16} {'extrapolated s':>15}" if args.quick else ""
        extra += f" {'extrap. CPU s':>14}" if args.quick else ""
        print(f"{'stage':<16} {'seconds':>8} {'wall s':>8} {'CPU s':>8} {'peak RSS MiB':>13} {'CUDA MiB':>9}{extra}")
        for name, s in measured.items():
            cuda = f"{s['cuda_max_mb']:.0f}" if s["cuda_max_mb"] is not None else "-"
            row = f"{name:<16} {s['seconds']:>8.1f} {s['wall_s']:>8.1f} {s['cpu_s']:>8.1f} {s['peak_rss_mb']:>13.0f} {cuda:>9}"
            if "extrapolated_s" in s:
                row += f" {_images(s['slice_images']):>14} {_images(s['full_images']):>16} {s['extrapolated_s']:>15.0f}"
                row += f" {s['extrapolated_cpu_s']:>14.0f}"
            print(row)
        print(f"{'total':<16} {result['total_seconds']:>8.1f}")
        if args.quick:
            print(f"{'extrapolated total':<40} {result['extrapolated_total_s']:>8.0f} s "
                  f"({result['extrapolated_total_s'] / 3600:.1f} h) on {result['device']}; "
                  f"CPU time {result['extrapolated_cpu_total_s'] / 3600:.1f} h")  # fmt: skip
        if args.estimate:
            print()
            print_estimate(result["estimate"])
    return result


def not_network_cpu(measured: dict[str, dict]) -> dict[str, float]:
    """CPU seconds per slice image of the :data:`NOT_NETWORK` stages of a ``--quick`` run's
    ``measured`` dict (the child's CPU seconds less those of the imports-only child)."""
    out = {}
    for stage in NOT_NETWORK:
        m = measured.get(stage)
        images = sum(m.get("slice_images", {}).values()) if m else 0
        if images:
            out[stage] = max(m["cpu_s"] - measured["imports"]["cpu_s"], 0.0) / images
    return out


def estimate_result(
    args: argparse.Namespace, config: str, cfg: Config, cpu_per_image: dict[str, float] | None = None
) -> dict:
    """:func:`flop_estimate` of ``cfg`` with the options of ``args``, sizes and assumptions named."""
    sizes, source = estimate_sizes(cfg)
    hw = image_size(cfg, args.image_size)
    per_stage = flop_estimate(cfg, sizes, hw, args.gpu_tflops, args.classes_per_image)
    for stage, seconds in (cpu_per_image or {}).items():
        per_stage[stage]["cpu_s_per_image"] = round(seconds, 3)
    note = (
        "ESTIMATE, not a measurement: network FLOPs counted by FlopCounterMode on the meta device, "
        f"divided by an ASSUMED {args.gpu_tflops:g} TFLOP/s sustained on one GPU. Not covered: the "
        "'uncounted' work of each stage, data loading, elementwise layers, the optimiser step."
    )
    if torch.cuda.is_available():
        note += " A GPU is present: run without --estimate to measure instead."
    return {
        "config": config, "overrides": args.overrides, "sizes": sizes, "sizes_from": source,
        "image_hw": list(hw), "gpu_tflops": args.gpu_tflops, "classes_per_image": args.classes_per_image,
        "stages": per_stage, "total_flops": sum(s["total_flops"] for s in per_stage.values()),
        "gpu_hours": sum(s["gpu_hours"] for s in per_stage.values()), "note": note,
    }  # fmt: skip


def print_estimate(result: dict) -> None:
    """The table of :func:`estimate_result`: one row per stage, then the total."""
    hw = result["image_hw"]
    print(f"{result['config']} {' '.join(result['overrides'])}: images {result['sizes']} "
          f"({result['sizes_from']}), evaluated at {hw[0]}x{hw[1]}")  # fmt: skip
    print(result["note"])
    print(f"{'stage':<15} {'trained+evaluated':>18} {'GFLOP/train img':>16} {'GFLOP/eval img':>15} "
          f"{'total PFLOP':>12} {'GPU h':>7}  uncounted work")  # fmt: skip
    for name, s in result["stages"].items():
        extra = s["uncounted"]
        if "cpu_s_per_image" in s:
            extra += f" ({s['cpu_s_per_image']:.2f} CPU s/image on the slice)"
        print(f"{name:<15} {_images(s['images']):>18} {s['flops_per_train_image'] / 1e9:>16.1f} "
              f"{s['flops_per_eval_image'] / 1e9:>15.1f} {s['total_flops'] / 1e15:>12.1f} "
              f"{s['gpu_hours']:>7.2f}  {extra}")  # fmt: skip
    print(f"{'total':<15} {'':>18} {'':>16} {'':>15} {result['total_flops'] / 1e15:>12.1f} "
          f"{result['gpu_hours']:>7.2f}  at {result['gpu_tflops']:g} TFLOP/s (assumed)")  # fmt: skip


def _images(load: dict[str, float]) -> str:
    """``train+eval`` image counts of a :func:`workload` dict, e.g. ``8+4``."""
    return f"{load.get('train', 0):.0f}+{load.get('eval', 0):.0f}"


if __name__ == "__main__":
    main()
