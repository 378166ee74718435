"""``python -m cpmc_lib.book build [--quick]`` builds the book; ``... execute NOTEBOOK`` runs one chapter;
``... screenshots HTML_DIR OUTDIR`` shoots every page of a built book in headless Chromium;
``... figures`` redraws the static figures of ``book/_static`` (the pipeline diagram the README shows).

A failing chapter prints ``error: ...`` (notebook, cell, rerun command) and exits with status 1;
the previous book stays.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import ROOT, BookBuildError, build_book, execute_alone, write_figures

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
    p.add_argument("--fresh", action="store_true", help="execute every chapter, even those whose outputs could be reused")
    p = sub.add_parser("execute", help="execute one chapter alone, as the build would (into <out>/executed/)")
    p.add_argument("notebook", type=Path, help="e.g. notebooks/03_classifier_cams.ipynb")
    p.add_argument("--quick", action="store_true", help="tiny data and one epoch (CI)")
    p.add_argument("--out", type=Path, default=ROOT / "build")
    p = sub.add_parser(
        "screenshots",
        help="one full-page PNG per page of a built book, and report.json (console errors, external requests)",
    )
    p.add_argument("html_dir", type=Path, help="the built book, e.g. build/book/_build/html")
    p.add_argument("outdir", type=Path, help="folder for the PNGs and report.json")
    p.add_argument("--width", type=int, default=1280, help="browser window width in CSS pixels (default 1280)")
    p.add_argument("--column", action="store_true", help="shoot only the text column, not the whole page")
    p = sub.add_parser("figures", help="draw the book's static figures into book/_static (the README shows them)")
    p.add_argument("--out", type=Path, default=ROOT / "book" / "_static")
    args = parser.parse_args(argv)
    if args.command == "figures":
        for path in write_figures(args.out):
            print(path)
        return 0
    if args.command == "screenshots":
        return _screenshots(args.html_dir, args.outdir, args.width, args.column)
    try:
        if args.command == "build":
            build_book(quick=args.quick, out=args.out, execute=not args.no_execute, fresh=args.fresh)
        else:
            execute_alone(args.notebook, quick=args.quick, out=args.out)
    except (BookBuildError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _screenshots(html_dir: Path, outdir: Path, width: int, column: bool) -> int:
    """Shoot every page; print one line per page; status 1 when a page had console errors or external requests."""
    from .browser import INSTALL_HINT, find_chromium, screenshot_book

    if not (html_dir / "index.html").is_file():
        print(f"error: {html_dir} holds no index.html; the built book is build/book/_build/html", file=sys.stderr)
        return 1
    if find_chromium() is None:
        print(f"error: no headless Chromium; {INSTALL_HINT}", file=sys.stderr)
        return 1
    reports = screenshot_book(html_dir, outdir, width=width, column=column)
    bad = 0
    for r in reports:
        problems = {"console errors": r.console_errors, "external requests": r.external,
                    "broken images": r.broken_images, "error outputs": r.errors, "dead links": r.dead_links}
        found = {k: v for k, v in problems.items() if v}
        bad += bool(found)
        print(f"{r.page}: {r.screenshot}" + "".join(f"\n  {k}: {v}" for k, v in found.items()))
    print(f"{len(reports)} pages, {bad} with problems; report: {outdir / 'report.json'}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
