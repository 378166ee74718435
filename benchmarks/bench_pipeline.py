"""Wall time and peak memory of each pipeline stage, every stage computed from scratch.

Each stage of :func:`cpmc_lib.pipeline.run` (data, pretrain when the classifier starts from the
ImageNet stand-in, classifier, cams_<method> for every method of ``CAM_REPORT``, pseudo, seg_wsss,
seg_full) runs in its own child process, in order, in a fresh
work folder (``runs/bench_pipeline`` and, for the synthetic benchmark, its data under the same
folder), so nothing is reused from earlier runs while each stage still reads what the previous
ones wrote. Per stage:

- ``seconds``: the stage call itself, timed inside the child;
- ``wall_s``: the child process, imports and reloading the model included;
- ``peak_rss_mb``: the child's peak resident memory (``os.wait4``'s rusage); the first row,
  ``imports``, is a child that runs no stage: the floor (Python, torch and the library) that every
  stage's figure includes;
- ``cuda_max_mb``: ``torch.cuda.max_memory_allocated`` in the child (CUDA only).

Finally :func:`cpmc_lib.pipeline.run` runs once more in this process, finds every stage done and
writes ``metrics.json`` with the scores and each stage's recorded ``stage_seconds``.

Run by hand (the default benchmark trains two networks: expect tens of minutes on a few cores)::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_pipeline.py [--quick] [--json] [--device cuda]

``--quick`` uses ``configs/quick.yaml`` (about a minute or two on a laptop CPU).
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
from pathlib import Path

from cpmc_lib import cams, classifier, pipeline, pretrain, pseudo, segmentation, synth
from cpmc_lib.config import Config, load_config
from cpmc_lib.datasets import build_dataset
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


def run_stage(cfg: Config, stage: str) -> None:
    """Run one stage of ``cfg`` (earlier stages must be done in its run folder)."""
    if stage == "imports":  # the baseline: a child that only imports
        return
    if stage == "data":
        if cfg.data.kind == "synth":
            synth.ensure_generated(cfg.synth, cfg.data_root(), progress=False)
        else:
            build_dataset(cfg, cfg.data.train_split)
    elif stage == "pretrain":
        pretrain.run(cfg, RunStore.for_config(cfg), progress=False)
    elif stage == "classifier":
        classifier.run(cfg, progress=False)
    elif stage.startswith("cams_"):
        cams.run(cfg, method=stage.removeprefix("cams_"), progress=False)
    elif stage == "pseudo":
        pseudo.run(cfg, progress=False)
    elif stage.startswith("seg_"):
        segmentation.run(cfg, labels="pseudo" if stage == "seg_wsss" else "gt", progress=False)
    else:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(stages(cfg))}")


def _child(config: str, overrides: list[str], stage: str) -> None:
    """Child process: run ``stage`` and print ``{"seconds", "cuda_max_mb"}`` as JSON."""
    import torch

    cfg = load_config(config, overrides)
    device = pick_device(cfg.device)
    t0 = time.perf_counter()
    run_stage(cfg, stage)
    seconds = time.perf_counter() - t0
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    print(json.dumps({"seconds": round(seconds, 2), "cuda_max_mb": cuda and round(cuda, 1)}))


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
    return {**result, "wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / per_mib, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", default=None, help="default: configs/default.yaml (quick: configs/quick.yaml)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the config's)")
    parser.add_argument("--quick", action="store_true", help="configs/quick.yaml: tiny data, one epoch")
    parser.add_argument(
        "--workdir", default=None, help="fresh folder for runs and data (default: a temp folder)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (default: deleted)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--stage", default=None, help=argparse.SUPPRESS)  # internal: the child process
    args = parser.parse_args(argv)
    config = args.config or ("configs/quick.yaml" if args.quick else "configs/default.yaml")
    if args.stage:
        _child(config, args.overrides, args.stage)
        return {}

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_pipeline_"))
    if work.exists() and any(work.iterdir()):  # finished stages there would be reused, not measured
        parser.error(f"--workdir {work} is not empty")
    overrides = ["run=bench_pipeline", f"runs_dir={work / 'runs'}", *args.overrides]
    if load_config(config, args.overrides).data.kind == "synth":
        overrides.append(f"data.root={work / 'data'}")
    if args.device:
        overrides.append(f"device={args.device}")
    cfg = load_config(config, overrides)
    try:
        measured = {}
        for stage in ["imports", *stages(cfg)]:
            measured[stage] = measure_stage(config, overrides, stage)
            if not args.json:
                print(f"  {stage} done in {measured[stage]['wall_s']:.1f} s", file=sys.stderr)
        metrics = pipeline.run(cfg, progress=False)  # every stage is done: gathers and writes metrics
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
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{config} {' '.join(args.overrides)} on {result['device']}")
        print(f"{'stage':<16} {'seconds':>8} {'wall s':>8} {'peak RSS MiB':>13} {'CUDA MiB':>9}")
        for name, s in measured.items():
            cuda = f"{s['cuda_max_mb']:.0f}" if s["cuda_max_mb"] is not None else "-"
            print(f"{name:<16} {s['seconds']:>8.1f} {s['wall_s']:>8.1f} {s['peak_rss_mb']:>13.0f} {cuda:>9}")
        print(f"{'total':<16} {result['total_seconds']:>8.1f}")
    return result


if __name__ == "__main__":
    main()
