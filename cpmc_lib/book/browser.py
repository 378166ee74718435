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

__all__ = ["INSTALL_HINT", "PageReport", "check_book", "find_chromium", "require_chromium"]

_CANDIDATES = (
    "/usr/lib/chromium/chromium-headless-shell",
    "/usr/lib/chromium-headless-shell/chromium-headless-shell",
    "/usr/bin/chromium-headless-shell",
    "/usr/bin/chromium",
)
INSTALL_HINT = "as root: apt-get install chromium-headless-shell (make test does this)"
# Flags that keep Chromium off the network and quiet in a sandbox-less container.
_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


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


def check_book(
    html_dir: str | Path, pages: list[str], shots: str | Path, chromium: str | None = None
) -> list[PageReport]:
    """Open each page of the built book in headless Chromium and report what a reader would see.

    Args:
        html_dir: the book's ``_build/html`` folder.
        pages: page files relative to it (``index.html``, ``notebooks/01_dataset.html``, ...).
        shots: folder for full-page screenshots.
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
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        for rel in pages:
            rep = PageReport(rel)
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
            page.screenshot(path=str(shot), full_page=True, timeout=120_000)  # long pages, busy CPUs
            rep.screenshot = str(shot)
            reports.append(rep)
        browser.close()
    return reports
