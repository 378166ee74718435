"""Images per second of every CAM method on the same model and the same batch, as ratios to "cam".

Methods: the classifier CAM ("cam", forward only), the CPMC maps ("refined", "proto", "cpmc",
forward + :func:`cpmc_lib.cpmc.cpmc_maps`, each method computing every CPMC map it needs) and the
pytorch-grad-cam peers ("gradcam", "gradcampp", "layercam", forward + backward per explained
(image, class) pair), and each group of methods the cams stage makes in one pass
("refined+proto+cpmc", "gradcam+gradcampp+layercam"). Every method runs through :func:`cpmc_lib.cam_methods.make_cam_method`, so the
cams stage's ``cams.scales`` and ``cams.flip`` apply (default config: one scale, 1.0, plus the
flipped image, i.e. a batch of 2B rows per call).

The model is the config's CamNet, randomly initialised (speed does not depend on the weights) or
loaded from ``--weights`` (e.g. ``runs/default/classifier/model.pt``). The batch is the first
``--batch`` images of the cam split when the configured data exists, else synthetic images of the
classifier's crop size with ``--classes`` present classes each (the number of classes matters for
the Grad-CAM family, which explains each present class separately). Each round times one call of
every method in turn (after ``--warmup`` untimed rounds), so load from other jobs hits every
method alike; each method's fastest call is reported (timeit's rule: slower calls measure the
other jobs, not the method).

Run by hand::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_cams.py [--quick] [--json] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from cpmc_lib.cam_methods import JOINT_METHODS, make_cam_method, make_joint_method
from cpmc_lib.config import Config, load_config
from cpmc_lib.datasets import DatasetError, build_dataset, collate
from cpmc_lib.models import build_model, load_classifier
from cpmc_lib.pipeline import CAM_REPORT
from cpmc_lib.runtime import pick_device, seed_everything
from cpmc_lib.transforms import eval_transform

METHODS = CAM_REPORT  # ours first, then the pytorch-grad-cam peers
# What the cams stage really runs: each group of JOINT_METHODS made in one pass ("a+b+c").
JOINT = tuple("+".join(g) for g in JOINT_METHODS)


def make_batch(
    cfg: Config, batch: int, size: int, classes: int, real: bool
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(img (B, 3, S, S), label (B, K-1), source): real cam-split images if asked and present."""
    if real and cfg.data_root().is_dir():
        try:
            ds = build_dataset(cfg, cfg.data.cam_split, eval_transform())
            items = collate([ds[i] for i in range(min(batch, len(ds)))])
            if not isinstance(items["img"], list):  # equal sizes only (synth); VOC varies
                return items["img"], items["label"], f"{cfg.data_root()} ({cfg.data.cam_split})"
        except DatasetError:
            pass  # an incomplete data folder: fall back to synthetic images
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(batch, 3, size, size, generator=gen)
    k1 = cfg.data.num_classes - 1
    label = torch.zeros(batch, k1)
    for i in range(batch):
        label[i, torch.randperm(k1, generator=gen)[:classes]] = 1
    return img, label, "synthetic"


def measure(
    cfg: Config, model, img: torch.Tensor, label: torch.Tensor, methods, rounds: int, warmup: int
) -> dict[str, float]:
    """Images per second of each method's fastest call, methods interleaved within every round."""
    device = img.device
    built = {
        m: make_joint_method(m.split("+"), model, cfg) if "+" in m else make_cam_method(m, model, cfg)
        for m in methods
    }
    times: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(warmup + rounds):
        for m, method in built.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            method(img, label)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if r >= warmup:
                times[m].append(time.perf_counter() - t0)
    return {m: img.shape[0] / min(t) for m, t in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--weights", default=None, help="trained classifier (model.pt); default: random init")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--batch", type=int, default=None, help="images per call (default: cams.batch_size)")
    parser.add_argument("--size", type=int, default=None, help="synthetic image side (default: crop size)")
    parser.add_argument("--classes", type=int, default=2, help="present classes per synthetic image")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--synthetic", action="store_true", help="synthetic images even if data exists")
    parser.add_argument("--quick", action="store_true", help="small batch and images: under a minute")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)

    cfg = load_config(args.config)
    device = pick_device(args.device)
    batch = args.batch or (8 if args.quick else cfg.cams.batch_size)
    size = args.size or (64 if args.quick else cfg.classifier.crop_size)
    warmup = 1 if args.quick and args.warmup == 2 else args.warmup
    seed_everything(cfg.seed)
    model = load_classifier(args.weights, cfg) if args.weights else build_model(cfg, pretrained=False).eval()
    model = model.to(device)
    # Quick mode keeps its small synthetic images: real ones would be the data's full size.
    img, label, source = make_batch(cfg, batch, size, args.classes, real=not (args.synthetic or args.quick))
    img, label = img.to(device), label.to(device)

    ips = measure(cfg, model, img, label, (*METHODS, *JOINT), args.rounds, warmup)
    result = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "images_per_s": {m: round(v, 2) for m, v in ips.items()},
        "ratios": {m: round(ips["cam"] / v, 2) for m, v in ips.items()},  # cost relative to "cam"
        "batch": int(img.shape[0]),
        "size": list(img.shape[-2:]),
        "scales": list(cfg.cams.scales),
        "flip": cfg.cams.flip,
        "images": source,
        "weights": args.weights or "random init",
        "rounds": args.rounds,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['device']}, {result['threads']} threads, batch {result['batch']} x {result['size']}, "
            f"scales {result['scales']} flip {result['flip']}, images {source}, {result['weights']}"
        )
        print(f"{'method':<24} {'images/s':>10} {'time / cam':>11}")
        for m in (*METHODS, *JOINT):
            print(f"{m:<24} {result['images_per_s'][m]:>10.1f} {result['ratios'][m]:>10.2f}x")
    return result


if __name__ == "__main__":
    main()
