"""``python -m cpmc_lib.book build [--quick]`` builds the book; ``... execute NOTEBOOK`` runs one chapter.

A failing chapter prints ``error: ...`` (notebook, cell, rerun command) and exits with status 1;
the previous book stays.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import ROOT, BookBuildError, build_book, execute_alone

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
    p = sub.add_parser("execute", help="execute one chapter alone, as the build would (into <out>/executed/)")
    p.add_argument("notebook", type=Path, help="e.g. notebooks/03_classifier_cams.ipynb")
    p.add_argument("--quick", action="store_true", help="tiny data and one epoch (CI)")
    p.add_argument("--out", type=Path, default=ROOT / "build")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build_book(quick=args.quick, out=args.out, execute=not args.no_execute)
        else:
            execute_alone(args.notebook, quick=args.quick, out=args.out)
    except (BookBuildError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
