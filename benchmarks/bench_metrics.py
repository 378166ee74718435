"""Time the CAM evaluation (threshold sweep) on the default benchmark's size: 2000 images of 128 px.

Run by hand: ``.venv/bin/python benchmarks/bench_metrics.py [--images 2000]``.
"""

import argparse
import time

import torch

from cpmc_lib.metrics import CamEvaluator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    rng = torch.Generator().manual_seed(0)
    ev = CamEvaluator(11)
    elapsed = 0.0
    for _ in range(args.images):
        cam = torch.rand(2, args.size, args.size, generator=rng)
        gt = torch.randint(0, 11, (args.size, args.size), generator=rng)
        t0 = time.perf_counter()
        ev.update(cam, [1, 5], gt)
        elapsed += time.perf_counter() - t0
    t0 = time.perf_counter()
    ev.compute()
    elapsed += time.perf_counter() - t0
    print(f"CamEvaluator: {args.images} images of {args.size}^2, 19 thresholds: {elapsed:.2f} s")


if __name__ == "__main__":
    main()
