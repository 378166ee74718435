"""Build the HTML book: execute every chapter notebook with papermill, then run jupyter-book.

``python -m cpmc_lib.book build`` (what ``make book`` calls):

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

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

__all__ = ["build", "execute_notebook", "hide_injected_parameters", "toc_files"]

ROOT = Path(__file__).resolve().parent.parent
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

    from .progress import PLAIN_ENV

    t0 = time.perf_counter()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with _environ(**{PLAIN_ENV: "1"}):  # plain-text progress: no widget outputs in the saved notebook
        pm.execute_notebook(
            str(src), str(dst), parameters=parameters, cwd=str(cwd), kernel_name="python3", progress_bar=False
        )
    hide_injected_parameters(dst)
    return time.perf_counter() - t0


@contextlib.contextmanager
def _environ(**values: str):
    """Set environment variables for the kernels started inside the block, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def hide_injected_parameters(path: Path) -> None:
    """Hide papermill's injected "Parameters" cell of an executed notebook; show its values in one line.

    The injected cell repeats the chapter's own parameters cell with the build's values. It gets
    jupyter-book's ``remove-cell`` tag, and a Markdown cell after it states the values the chapter
    ran with (``config_path = "configs/quick.yaml"; overrides = []``). Rewrites ``path`` atomically.
    """
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            values = [line.strip() for line in src.splitlines() if line.strip() and not line.startswith("#")]
            text = "; ".join(f"`{v}`" for v in values)
            note = {"cell_type": "markdown", "metadata": {"tags": ["run-parameters"]},
                    "source": f"*This page ran with* {text}."}  # fmt: skip
            if "id" in cell:
                note["id"] = f"{cell['id']}-values"
            nb["cells"].insert(i + 1, note)
            break
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False))
    os.replace(tmp, path)


def build(quick: bool = False, out: Path = ROOT / "build", execute: bool = True) -> Path:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cpmc_lib.book", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="execute the notebooks and build the HTML book")
    p.add_argument("--quick", action="store_true", help="tiny data and one epoch (CI)")
    p.add_argument("--out", type=Path, default=ROOT / "build")
    p.add_argument("--no-execute", action="store_true", help="copy notebooks without executing them")
    args = parser.parse_args(argv)
    build(quick=args.quick, out=args.out, execute=not args.no_execute)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
