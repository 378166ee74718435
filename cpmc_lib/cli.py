"""Command line: ``python -m cpmc_lib <command>`` (also installed as ``cpmc``).

Every stage of :data:`cpmc_lib.stages.STAGES` is a command (its ``command`` and ``help``:
``pretrain``, ``train``, ``cams --method M``, ``pseudo``, ``segment``, ``ceiling``), and so is
``pipeline`` (all of them, then ``runs/<run>/metrics.json``). Each takes ``--config`` (YAML),
``--set key=value`` overrides (repeatable), ``--run NAME`` (folder under ``runs/``) and ``--data DIR``
(dataset root), and calls :func:`cpmc_lib.pipeline.ensure`, as a notebook does: the stage runs after
the stages it reads (each reused when the run store has it for the config).

The same command line runs on several GPUs under ``torchrun --nproc_per_node N -m cpmc_lib ...``:
the processes join one group (:mod:`cpmc_lib.distributed`) and only rank 0 prints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from pathlib import Path

from .config import ConfigError, load_config

__all__ = ["build_parser", "main"]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="YAML config (default: built-in defaults)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set classifier.epochs=3 (repeatable)",
    )
    p.add_argument("--run", default=None, help="run name: outputs go to runs/<run>/ (default: config's run)")
    p.add_argument("--data", default=None, help="dataset root in the VOC layout (overrides data.root)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _config(args: argparse.Namespace):
    overrides = list(args.overrides)
    if args.run:
        overrides.append(f"run={args.run}")
    if args.data:
        overrides.append(f"data.root={args.data}")
    return load_config(args.config, overrides)


def _say(text: str) -> None:
    """Print on rank 0 only (under torchrun every rank runs the command)."""
    from . import distributed

    if distributed.is_main():
        print(text)


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars unless ``--quiet``, and on rank 0 only."""
    from . import distributed

    return not args.quiet and distributed.is_main()


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    cfg = _config(args)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0


def _cmd_stages(args: argparse.Namespace) -> int:
    from .stages import table

    print(table(_config(args)))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from . import synth

    card = synth.generate(synth.config_from_args(args), args.out, progress=not args.quiet)
    print(
        f"wrote {args.out} ({card['num_classes']} classes incl. background); card: {Path(args.out) / 'dataset_card.json'}"
    )
    return 0


def _cmd_stage(args: argparse.Namespace) -> int:
    from . import pipeline

    method = {"method": args.method} if getattr(args, "method", None) else {}
    result = pipeline.ensure(_config(args), args.stage, progress=_progress(args), **method)
    _say(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=2))
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from . import pipeline

    cfg = _config(args)
    metrics = pipeline.run(cfg, progress=_progress(args))
    _say(pipeline.format_metrics(metrics))
    _say(f"\nwrote {cfg.run_dir() / 'metrics.json'}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from . import sweep

    result = sweep.run_sweep(args.file, workers=args.workers, progress=not args.quiet)
    done = sum(r["status"] != "failed" for r in result["rows"])
    skipped = sum(r["status"] == "skipped" for r in result["rows"])
    print(
        f"{done}/{len(result['rows'])} points finished ({skipped} skipped: done in an earlier run); "
        f"table: {result['csv']}"
    )
    for name, err in result["failures"].items():
        print(f"FAILED {name}: {err}")
    if args.record:
        print(f"record: {sweep.write_record(args.file, command=shlex.join(['python', '-m', 'cpmc_lib', *sys.argv[1:]]))}")
    return 1 if result["failures"] else 0


def _cmd_records(args: argparse.Namespace) -> int:
    from . import sweep

    if args.list:
        hours = 0.0
        for name, family in sweep.RECORDED.items():
            points = len(sweep.load_sweep(sweep.ROOT / "papermill_runs" / f"{name}.yaml").points)
            record = sweep.load_record(name)
            took = f"took {sweep.record_hours(record):.1f} h when recorded" if record else "no record yet"
            print(f"{name:16s} {family:10s} {points:3d} points  {took:26s}  papermill_runs/{name}.yaml")
            hours += sweep.record_hours(record) if record else 0.0
        print(f"the records made so far took {hours:.1f} h in all (the sum of their points' stage times)")
        return 0
    failed = 0
    for name, r in sweep.remake_records(args.only, workers=args.workers, progress=not args.quiet).items():
        print(f"{name}: {r['seconds']:.0f} s; record: {r['record'] or 'none (no point finished)'}")
        for point, err in r["failures"].items():
            print(f"  FAILED {point}: {err}")
        failed += len(r["failures"])
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cpmc_lib",
        description="CPMC (Classifier-Prototype Mutual Calibration) for weakly supervised semantic segmentation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="print the resolved configuration (validates keys and types)")
    _add_common(p)
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("stages", help="print the stage table: what each stage reads, its config sections, its command")
    _add_common(p)
    p.set_defaults(func=_cmd_stages)

    p = sub.add_parser("synth", help="write the synthetic WSSS benchmark in the VOC layout")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from . import synth

    synth.add_synth_arguments(p)
    p.set_defaults(func=_cmd_synth)

    from .cam_methods import CAM_METHODS
    from .stages import STAGES

    for stage in STAGES.values():  # one command per stage, from the stage table
        p = sub.add_parser(stage.command, help=stage.help)
        _add_common(p)
        if stage.per_method:
            p.add_argument("--method", default="cam", choices=tuple(CAM_METHODS), help="CAM method")
        p.set_defaults(func=_cmd_stage, stage=stage.name)

    p = sub.add_parser("pipeline", help="run every stage in order and write runs/<run>/metrics.json")
    _add_common(p)
    p.set_defaults(func=_cmd_pipeline)

    p = sub.add_parser("sweep", help="run a papermill sweep (papermill_runs/<name>.yaml), resumably")
    p.add_argument("file", type=Path, help="sweep definition, e.g. papermill_runs/ablation.yaml")
    p.add_argument("--workers", type=int, default=None, help="points in parallel (default: the file's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--record", action="store_true",
        help="then write papermill_runs/records/<sweep>.json (every finished point's metrics, commits, date) for the book",
    )  # fmt: skip
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser(
        "records", help="remake every record the book reads (tuning, validation, test), resumably: hours on 2 cores"
    )
    p.add_argument("--only", nargs="+", default=None, metavar="SWEEP", help="these records only (see --list)")
    p.add_argument("--list", action="store_true", help="list the records, their family and size, and stop")
    p.add_argument("--workers", type=int, default=None, help="points in parallel (default: each file's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_records)
    return parser


def _process_group(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """Under torchrun, the process group of a stage command (NCCL or gloo by the config's device)."""
    from . import distributed

    if not distributed.launched() or not hasattr(args, "overrides"):
        return contextlib.nullcontext()
    from .runtime import pick_device

    cfg = _config(args)
    # Every global batch must split evenly over the processes: said now, not after an hour of pretraining.
    world = int(os.environ.get("WORLD_SIZE", "1"))
    for key in ("pretrain.batch_size", "classifier.batch_size", "segmentation.batch_size"):
        section, name = key.split(".")
        batch = getattr(getattr(cfg, section), name)
        if batch % world:
            raise ConfigError(f"{key}={batch} is the global batch and must be divisible by the {world} processes "
                              f"of torchrun; use a multiple of {world}")  # fmt: skip
    return distributed.process_group(pick_device(cfg.device))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _process_group(args):
            return args.func(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError, RuntimeError, FloatingPointError) as e:
        # Library errors name the file and the fix (FloatingPointError: a diverged training;
        # OSError: a file that cannot be read or written, e.g. a full disk, named by cpmc_lib.io;
        # ValueError includes DatasetError, synth.DataFolderError and store.RunDirError);
        # a traceback adds nothing for a user.
        # CPMC_DEBUG=1 shows it for a developer.
        if os.environ.get("CPMC_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
