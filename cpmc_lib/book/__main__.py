"""``python -m cpmc_lib.book build [--quick] [--out DIR] [--no-execute]``: execute the chapters, build the book."""

from __future__ import annotations

import argparse
from pathlib import Path

from .build import ROOT, build_book

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cpmc_lib.book", description="Execute the chapter notebooks and build the HTML book."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="execute the notebooks and build the HTML book")
    p.add_argument("--quick", action="store_true", help="tiny data and one epoch (CI)")
    p.add_argument("--out", type=Path, default=ROOT / "build")
    p.add_argument("--no-execute", action="store_true", help="copy notebooks without executing them")
    args = parser.parse_args(argv)
    build_book(quick=args.quick, out=args.out, execute=not args.no_execute)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
