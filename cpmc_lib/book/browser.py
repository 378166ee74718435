"""Check the built HTML book as a reader would: in headless Chromium, page by page.

Used by the book test (``tests/test_book.py``) after a quick build. Chromium is Debian's
``chromium-headless-shell`` (the Makefile installs it when absent); Playwright drives it, because
Playwright's own browser download needs the internet. Without a browser the check is skipped,
except under ``CI=true``, where it fails (:func:`require_chromium`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = [
    "COLUMN",
    "INSTALL_HINT",
    "PageReport",
    "book_pages",
    "check_book",
    "check_explorer",
    "find_chromium",
    "require_chromium",
    "screenshot_book",
    "watch_offline",
]

_CANDIDATES = (
    "/usr/lib/chromium/chromium-headless-shell",
    "/usr/lib/chromium-headless-shell/chromium-headless-shell",
    "/usr/bin/chromium-headless-shell",
    "/usr/bin/chromium",
)
INSTALL_HINT = "as root: apt-get install chromium-headless-shell (make test does this)"
# Flags that keep Chromium off the network and quiet in a sandbox-less container.
_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic",
         "--host-resolver-rules=MAP * ~NOTFOUND"]  # fmt: skip  # no name resolves: offline


# The book's text column (sphinx-book-theme's article); ``column=True`` screenshots only it.
COLUMN = "article.bd-article"


def find_chromium() -> str | None:
    """Path of a headless Chromium binary, or None."""
    for c in _CANDIDATES:
        if Path(c).is_file():
            return c
    return shutil.which("chromium-headless-shell") or shutil.which("chromium")


def require_chromium() -> str | None:
    """The headless Chromium for the book test: its path, or None where the check may be skipped.

    Raises:
        FileNotFoundError: no browser while ``CI`` is ``true`` (or ``1``): a CI run must check the book.
    """
    exe = find_chromium()
    if exe is None and os.environ.get("CI", "").lower() in ("true", "1"):
        raise FileNotFoundError(
            f"no headless Chromium, and CI=true requires the book's browser check; {INSTALL_HINT}"
        )
    return exe


@dataclass
class PageReport:
    """What one page showed: broken images, error outputs, dead internal links, tables, screenshot."""

    page: str
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    tables: int = 0
    errors: list[str] = field(default_factory=list)
    dead_links: list[str] = field(default_factory=list)
    math: int = 0
    screenshot: str = ""
    external: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


def check_book(
    html_dir: str | Path,
    pages: list[str],
    shots: str | Path,
    chromium: str | None = None,
    width: int = 1280,
    column: bool = False,
) -> list[PageReport]:
    """Open each page of the built book in headless Chromium and report what a reader would see.

    Args:
        html_dir: the book's ``_build/html`` folder.
        pages: page files relative to it (``index.html``, ``notebooks/01_dataset.html``, ...).
        shots: folder for the screenshots, one PNG per page (``notebooks_01_dataset.png``).
        width: the browser window's width in CSS pixels (1280: a laptop, sidebars shown).
        column: screenshot only the text column (:data:`COLUMN`, its whole height) instead of the
            full page; a page without it is shot in full.
    """
    from playwright.sync_api import sync_playwright

    html_dir, shots = Path(html_dir).resolve(), Path(shots)
    shots.mkdir(parents=True, exist_ok=True)
    exe = chromium or find_chromium()
    if exe is None:
        raise FileNotFoundError(f"no headless Chromium; {INSTALL_HINT}")
    reports = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=_ARGS)
        page = browser.new_page(viewport={"width": width, "height": 900})
        seen = watch_offline(page)
        for rel in pages:
            rep = PageReport(rel)
            seen["external"].clear()
            seen["console"].clear()
            path = html_dir / rel
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_timeout(300)  # let MathJax typeset (and a redirect such as index.html land)
            here = Path(unquote(urlparse(page.url).path))  # links resolve against where we landed
            imgs = page.eval_on_selector_all(
                "main img", "els => els.map(e => [e.getAttribute('src'), e.complete && e.naturalWidth > 0])"
            )
            rep.images = len(imgs)
            rep.broken_images = [src for src, ok in imgs if not ok]
            rep.tables = page.locator("main table").count()
            rep.math = page.locator("mjx-container").count()
            rep.errors = page.eval_on_selector_all(
                ".cell_output .output.traceback, .cell_output .output.error",
                "els => els.map(e => e.innerText.slice(0, 200))",
            )
            for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))"):
                url = urlparse(href)
                if url.scheme or href.startswith("#") or not url.path:
                    continue
                target = (here.parent / unquote(url.path)).resolve()
                if not target.exists():
                    rep.dead_links.append(href)
            shot = shots / (rel.replace("/", "_").removesuffix(".html") + ".png")
            col = page.locator(COLUMN)
            if column and col.count():
                col.first.screenshot(path=str(shot), timeout=120_000)
            else:
                page.screenshot(path=str(shot), full_page=True, timeout=120_000)  # long pages, busy CPUs
            rep.screenshot = str(shot)
            rep.external = [*seen["external"], *external_sources(page)]
            rep.console_errors = list(seen["console"])
            reports.append(rep)
        browser.close()
    return reports


def book_pages(html_dir: str | Path) -> list[str]:
    """The pages of a built book, relative to ``html_dir``: ``index.html``, then the table of contents.

    The table of contents is the built book's ``_toc.yml`` (``<book>/_toc.yml`` beside ``_build``);
    without one, every ``.html`` file except Sphinx's generated index and search pages.
    """
    import yaml

    from .build import toc_files

    html_dir = Path(html_dir)
    toc = html_dir.parent.parent / "_toc.yml"
    if toc.is_file():
        pages = ["index.html"] + [f"{f}.html" for f in toc_files(yaml.safe_load(toc.read_text()))]
        return [p for p in dict.fromkeys(pages) if (html_dir / p).is_file()]
    skip = {"genindex.html", "search.html", "py-modindex.html"}
    return sorted(
        str(p.relative_to(html_dir)) for p in html_dir.rglob("*.html")
        if not p.relative_to(html_dir).parts[0].startswith("_") and p.name not in skip
    )  # fmt: skip


def screenshot_book(
    html_dir: str | Path, out: str | Path, width: int = 1280, column: bool = False, chromium: str | None = None
) -> list[PageReport]:
    """One PNG per page of a built book in ``out``, and ``out/report.json``: what each page showed.

    ``python -m cpmc_lib.book screenshots build/book/_build/html OUTDIR`` calls it. The report lists
    per page its screenshot, console errors, requests outside the book (blocked: the browser is
    offline), broken images, error outputs and dead links (:func:`check_book`).
    """
    import dataclasses
    import json

    out = Path(out)
    reports = check_book(html_dir, book_pages(html_dir), out, chromium=chromium, width=width, column=column)
    (out / "report.json").write_text(json.dumps([dataclasses.asdict(r) for r in reports], indent=1))
    return reports


def watch_offline(page) -> dict[str, list[str]]:
    """Keep a Playwright page off the network and record what it tried.

    Every request that is not ``file:``/``data:``/``blob:``/``about:`` is aborted and listed in
    ``["external"]``; console errors and uncaught exceptions go to ``["console"]``.
    """
    seen: dict[str, list[str]] = {"external": [], "console": []}

    def route(r):
        url = r.request.url
        if url.split(":", 1)[0] in ("file", "data", "blob", "about"):
            r.continue_()
        else:
            seen["external"].append(url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda msg: seen["console"].append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: seen["console"].append(str(exc)))
    return seen


def external_sources(page) -> list[str]:
    """``src``/``href`` of the page's scripts, stylesheets and images that point outside the book (http, https, //)."""
    return page.eval_on_selector_all(
        "script[src], link[rel=stylesheet][href], link[rel=preload][href], img[src], iframe[src]",
        """els => els.map(e => e.getAttribute('src') || e.getAttribute('href'))
                    .filter(u => /^(https?:)?\\/\\//i.test(u))""",
    )


def check_explorer(page_path: str | Path, chromium: str | None = None) -> dict[str, object]:
    """Open the explorer chapter offline and turn its controls, as a reader without a kernel would.

    Returns:
        dict with ``found`` (the kernel-free explorer is on the page), ``states`` (its drawing state
        after each change: the map, threshold and image shown), ``srcs`` (the image, map and mask panels after each
        change), ``scores`` (the score line after each change), ``external`` and ``console``.
    """
    from playwright.sync_api import sync_playwright

    exe = chromium or find_chromium()
    if exe is None:
        raise FileNotFoundError("no headless Chromium: apt-get install chromium-headless-shell")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        seen = watch_offline(page)
        page.goto(Path(page_path).resolve().as_uri(), wait_until="load")
        root = page.locator("[data-cpmc-explorer]")
        result: dict[str, object] = {"found": root.count() > 0, "states": [], "srcs": [], "scores": []}
        if result["found"]:
            uid = root.first.get_attribute("id")

            def snap():
                result["states"].append(root.first.get_attribute("data-state"))
                result["srcs"].append(tuple(page.get_attribute(f"#{uid}-{k}", "src") for k in ("img", "heat", "mask")))
                result["scores"].append(page.inner_text(f"#{uid}-score"))

            snap()
            slider = page.locator(f"#{uid}-threshold")  # to its other end (a map opens at its best value)
            low = slider.input_value() != slider.get_attribute("min")
            page.fill(f"#{uid}-threshold", slider.get_attribute("min") if low else slider.get_attribute("max"))
            page.dispatch_event(f"#{uid}-threshold", "input")
            snap()
            page.check(f"input[name='{uid}-method'][value='cam']")  # another map
            snap()
            page.select_option(f"#{uid}-image", index=1)  # another image
            snap()
        result["external"] = [*seen["external"], *external_sources(page)]
        result["console"] = list(seen["console"])
        browser.close()
    return result
