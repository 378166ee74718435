"""Open a chapter in JupyterLab as a reader does: a local server, headless Chromium, Run All, a control.

``make lab`` starts JupyterLab on ``notebooks/``, where every kernel starts in the notebook's own
folder. :func:`lab_server` starts the same JupyterLab (this interpreter's, offline: no news, no
update check) on a free local port; :func:`run_in_lab` opens one notebook in headless Chromium,
runs all its cells from the Run menu, and, when the notebook shows the live explorer
(:meth:`cpmc_lib.explorer.Explorer.widget`), clicks another map and waits for the drawing to
change. The book test (``tests/test_lab.py``) runs chapter 10 this way.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..progress import PLAIN_ENV
from .browser import _ARGS, find_chromium

__all__ = ["LabRun", "lab_server", "run_in_lab"]


@contextlib.contextmanager
def lab_server(root: str | Path, log: str | Path, timeout: float = 120.0) -> Iterator[str]:
    """A JupyterLab server on ``root`` for the duration of the block; yields its URL with the token.

    Args:
        log: file that receives the server's output (named in the error when it does not start).
    """
    with socket.socket() as s:  # a free port; the tiny race with another process is acceptable in a test
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly", "--allow-root"]  # fmt: skip  # root: containers, CI
    with open(log, "w") as out:
        env = {k: v for k, v in os.environ.items() if k != PLAIN_ENV}  # widgets, as for a reader
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start on {base} (its output: {log})") from None
                time.sleep(0.5)
        yield f"{base}?token={token}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class LabRun:
    """What JupyterLab showed: each code cell's prompt after Run All, the error outputs, the explorer."""

    prompts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    drawings: list[str] = field(default_factory=list)  # the explorer's image, before and after the click
    scores: list[str] = field(default_factory=list)  # its score line, likewise
    external: list[str] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        """Every code cell finished (a failing cell stops Run All: the cells after it keep ``[ ]``)."""
        return bool(self.prompts) and all(re.fullmatch(r"\[\d+\]:", p) for p in self.prompts)


def run_in_lab(url: str, notebook: str, timeout: float = 600.0, map_button: str = "cam") -> LabRun:
    """Open ``notebook`` (relative to the server's root) in JupyterLab, run all cells, turn the explorer.

    Args:
        url: :func:`lab_server`'s URL (with the token).
        map_button: the explorer's map to click after the run.
    """
    from playwright.sync_api import sync_playwright

    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no headless Chromium: apt-get install chromium-headless-shell")
    base, query = url.split("?", 1)
    run = LabRun()
    with sync_playwright() as p:
        # offline as the book check, but for the local server
        args = [a for a in _ARGS if not a.startswith("--host-resolver-rules")]
        browser = p.chromium.launch(executable_path=exe, args=[*args, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("request", lambda r: run.external.append(r.url) if not r.url.startswith(
            (base, "data:", "blob:", "about:")) else None)  # fmt: skip
        page.goto(f"{base}/lab/tree/{notebook}?{query}", wait_until="load")
        page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=120_000)
        _idle(page, timeout)  # the kernel started
        _run_all(page)
        _ran(page, timeout)
        run.prompts = page.eval_on_selector_all(
            ".jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent.replace(/\\s/g, ''))"
        )
        run.errors = page.eval_on_selector_all(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
            "els => els.map(e => e.textContent.slice(0, 300)).filter(t => /Error|Traceback/.test(t))",
        )
        drawing, score = page.locator("img.widget-image"), page.locator(".widget-html-content")
        if drawing.count():
            run.drawings.append(drawing.first.get_attribute("src") or "")
            run.scores.append(score.last.inner_text())
            page.locator(".widget-toggle-button", has_text=re.compile(rf"^{map_button}$")).first.click()
            page.wait_for_function(
                "src => { const e = document.querySelector('img.widget-image'); return e && e.src !== src; }",
                arg=run.drawings[0], timeout=timeout * 1000,
            )  # fmt: skip
            run.drawings.append(drawing.first.get_attribute("src") or "")
            run.scores.append(score.last.inner_text())
        browser.close()
    return run


def _run_all(page, tries: int = 5) -> None:
    """Run > Run All Cells, again until a cell is queued or ran: a busy machine may still be restoring
    the workspace when the first click lands, and the command then has no notebook to act on."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    started = "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].some(p => /[*0-9]/.test(p.textContent))"
    for _ in range(tries):
        page.locator(".jp-Notebook .jp-Cell").first.click()  # the notebook is the current widget
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
        try:
            page.wait_for_function(started, timeout=30_000)
            return
        except PlaywrightTimeout:  # nothing was queued: try again
            page.keyboard.press("Escape")
    raise TimeoutError(f"Run All Cells queued no cell after {tries} tries")


def _idle(page, timeout: float) -> None:
    """Wait until the notebook's kernel reports idle."""
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=timeout * 1000)


def _ran(page, timeout: float) -> None:
    """Wait until no cell is queued or running (``[*]``) and the kernel is idle, twice in a row."""
    js = r"""() => { const ps = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                    const ind = document.querySelector('.jp-Notebook-ExecutionIndicator');
                    return ps.some(p => /\d/.test(p.textContent)) && !ps.some(p => p.textContent.includes('*'))
                           && (!ind || ind.getAttribute('data-status') === 'idle'); }"""
    deadline = time.monotonic() + timeout
    settled = 0
    while settled < 2:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the notebook still ran after {timeout:.0f} s")
        page.wait_for_timeout(1000)
        settled = settled + 1 if page.evaluate(js) else 0
