"""Command line: ``python -m cpmc_lib <command>`` (also installed as ``cpmc``).

Every command that runs a stage takes ``--config`` (YAML), ``--set key=value`` overrides (repeatable),
``--run NAME`` (folder under ``runs/``) and ``--data DIR`` (dataset root), and calls the same
``run(cfg, store)`` function a notebook calls.
"""

from __future__ import annotations

import argparse
import json
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


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    cfg = _config(args)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from . import synth

    card = synth.generate(synth.config_from_args(args), args.out, progress=not args.quiet)
    print(
        f"wrote {args.out} ({card['num_classes']} classes incl. background); card: {Path(args.out) / 'dataset_card.json'}"
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from . import classifier

    result = classifier.run(_config(args), progress=not args.quiet)
    print(json.dumps(result, indent=2))
    return 0


def _cmd_cams(args: argparse.Namespace) -> int:
    from . import cams

    result = cams.run(_config(args), method=args.method, progress=not args.quiet)
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cpmc_lib",
        description="CPMC (Classifier-Prototype Mutual Calibration) for weakly supervised semantic segmentation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="print the resolved configuration (validates keys and types)")
    _add_common(p)
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("synth", help="write the synthetic WSSS benchmark in the VOC layout")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from . import synth

    synth.add_synth_arguments(p)
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("train", help="train the multi-label classifier (checkpoints and resumes)")
    _add_common(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("cams", help="compute and evaluate CAMs on the cam split")
    _add_common(p)
    p.add_argument("--method", default="cam", help="CAM method (cam, gradcam, gradcampp, layercam, ...)")
    p.set_defaults(func=_cmd_cams)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
