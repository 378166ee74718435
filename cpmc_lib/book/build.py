"""Build the HTML book: execute every chapter notebook with papermill, then run jupyter-book.

``python -m cpmc_lib.book build`` (what ``make book`` calls) runs :func:`build_book`:

1. reads the chapter order from ``book/_toc.yml``;
2. executes each listed notebook of ``notebooks/`` headlessly with papermill, in order, into
   ``build/book/notebooks/`` (the sources stay output-free), with the repository root as working
   directory and the config chosen by ``--quick`` as the ``config_path`` parameter; the landing
   page (the root, which gathers the chapters' results into the reader's headline table) runs last;
3. copies the book's own pages beside them and runs ``jupyter-book build`` on the copy with
   execution switched off (the notebooks already ran);
4. prints the path of the index page.

Chapters listed in the table of contents whose notebook or page does not exist yet are left out
of the build and named in the output, so the book always builds from what exists.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

__all__ = ["CONFIGS", "ROOT", "build_book", "execute_notebook", "toc_files"]

ROOT = Path(__file__).resolve().parents[2]  # the repository: cpmc_lib/book/build.py -> ./
CONFIGS = {False: "configs/default.yaml", True: "configs/quick.yaml"}


def toc_files(toc: dict) -> list[str]:
    """Every ``file:`` entry of a jupyter-book ``_toc.yml`` (root first), in reading order."""
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for key in ("chapters", "parts", "sections"):
                for child in node.get(key, []):
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk({k: v for k, v in toc.items() if k != "root"})
    return files


def _prune_toc(node, keep: set[str]):
    """Drop entries whose file is missing; keep structure otherwise."""
    if isinstance(node, list):
        out = [_prune_toc(n, keep) for n in node]
        return [n for n in out if n is not None]
    if isinstance(node, dict):
        if "file" in node and node["file"] not in keep:
            return None
        new = dict(node)
        for key in ("chapters", "parts", "sections"):
            if key in new:
                new[key] = _prune_toc(new[key], keep)
                if not new[key]:
                    del new[key]
        if "parts" not in new and "chapters" not in new and "file" not in new and "caption" in new:
            return None
        return new
    return node


def execute_notebook(src: Path, dst: Path, parameters: dict, cwd: Path = ROOT) -> float:
    """Execute ``src`` headlessly with papermill into ``dst``; returns the seconds it took."""
    import papermill as pm

    t0 = time.perf_counter()
    dst.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(
        str(src), str(dst), parameters=parameters, cwd=str(cwd), kernel_name="python3", progress_bar=False
    )
    return time.perf_counter() - t0


def build_book(quick: bool = False, out: Path = ROOT / "build", execute: bool = True) -> Path:
    """Execute the chapters and build the HTML book under ``out``; returns the index page path."""
    src_book = ROOT / "book"
    toc = yaml.safe_load((src_book / "_toc.yml").read_text())
    files = toc_files(toc)
    dest = out / "book"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src_book, dest, ignore=shutil.ignore_patterns("_build"))

    present, missing = set(), []
    params = {"config_path": CONFIGS[quick]}
    for f in [*files[1:], files[0]]:  # the root summarises the chapters: it runs last
        if f.startswith("notebooks/"):
            nb = ROOT / f"{f}.ipynb"
            if not nb.exists():
                missing.append(f"{f}.ipynb")
                continue
            if execute:
                print(f"executing {nb.relative_to(ROOT)} ...", flush=True)
                secs = execute_notebook(nb, dest / f"{f}.ipynb", params)
                print(f"  done in {secs:.0f} s", flush=True)
            else:
                (dest / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(nb, dest / f"{f}.ipynb")
            present.add(f)
        elif any((src_book / f"{f}{ext}").exists() for ext in (".md", ".ipynb", ".rst")):
            present.add(f)
        else:
            missing.append(f"book/{f}.md")
    (dest / "_toc.yml").write_text(yaml.safe_dump(_prune_toc(toc, present), sort_keys=False))

    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(dest), "--builder", "html"]
    subprocess.run(cmd, check=True)
    index = dest / "_build" / "html" / "index.html"
    if missing:
        print("chapters not written yet (left out of this build):\n  " + "\n  ".join(missing))
    print(f"book: {index}")
    return index
