"""Build the HTML book: execute every chapter notebook with papermill, then run jupyter-book.

``python -m cpmc_lib.book build`` (what ``make book`` calls) runs :func:`build_book`:

1. reads the chapter order from ``book/_toc.yml``;
2. executes each listed notebook of ``notebooks/`` headlessly with papermill, in order, into a
   staging copy of the book, ``build/.book.building/`` (the sources stay output-free), with the
   repository root as working directory and the config chosen by ``--quick`` as the
   ``config_path`` parameter; the landing page (the root, which gathers the chapters' results
   into the reader's headline table) runs last. A chapter whose code, parameters, library, configs
   and records are those of its last run (:func:`chapter_key`) is not run again: its outputs come
   from ``build/.executed/`` with its current prose, so editing text rebuilds in seconds;
3. copies the book's own pages beside them and runs ``jupyter-book build`` on the copy with
   execution switched off (the notebooks already ran);
4. only then swaps the finished copy in as ``build/book/`` (two renames on one file system; the
   previous book is removed after the new one is in place) and prints the path of the index page.

A notebook that fails stops the build with a :class:`BookBuildError` naming the notebook, the cell
(its index and first line) and the command that reruns that notebook alone
(``python -m cpmc_lib.book execute notebooks/<name>.ipynb``); the previous book stays as it was,
and the staging copy keeps the failed notebook's output up to the error.

Chapters listed in the table of contents whose notebook or page does not exist yet are left out
of the build and named in the output, so the book always builds from what exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ..project import ROOT

__all__ = [
    "CONFIGS",
    "ROOT",
    "BookBuildError",
    "build_book",
    "chapter_key",
    "execute_alone",
    "execute_notebook",
    "hide_injected_parameters",
    "inputs_digest",
    "rerun_command",
    "reuse_executed",
    "toc_files",
    "write_figures",
]

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


class BookBuildError(RuntimeError):
    """The book could not be built: a chapter failed (named with its cell and the command that reruns
    it alone) or jupyter-book did. The previous book is unchanged."""


def rerun_command(notebook: str, quick: bool = False) -> str:
    """The command that executes ``notebook`` (``notebooks/<name>.ipynb``) alone, as the build would."""
    exe = Path(sys.executable)
    python = exe.relative_to(Path.cwd()) if exe.is_relative_to(Path.cwd()) else "python"
    return f"{python} -m cpmc_lib.book execute {notebook}" + (" --quick" if quick else "")


def _failed_cell(src: Path, err: Exception) -> str:
    """``cell <i> (`first line`)`` of the source notebook where papermill's ``err`` happened.

    papermill counts the cells of its output, which holds one more (the injected parameters), so
    the cell is found in the source by its text.
    """
    import nbformat

    source = getattr(err, "source", "") or ""
    cells = nbformat.read(src, as_version=4).cells
    index = next((i for i, c in enumerate(cells) if c.source == source), None)
    first = next((line.strip() for line in source.splitlines() if line.strip()), "")
    where = f"cell {index}" if index is not None else "the injected parameters cell"
    return f"{where} (0-based, markdown cells counted: `{first}`)"


def execute_notebook(src: Path, dst: Path, parameters: dict, cwd: Path = ROOT, rerun: str = "") -> float:
    """Execute ``src`` headlessly with papermill into ``dst``; returns the seconds it took.

    Raises:
        BookBuildError: a cell raised; names ``src``, the cell, the error and ``rerun``.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from ..progress import PLAIN_ENV

    t0 = time.perf_counter()
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _environ(**{PLAIN_ENV: "1"}):  # plain-text progress: no widget outputs in the saved notebook
            pm.execute_notebook(
                str(src), str(dst), parameters=parameters, cwd=str(cwd), kernel_name="python3", progress_bar=False
            )
    except PapermillExecutionError as e:
        shown = src.relative_to(cwd) if src.is_relative_to(cwd) else src
        raise BookBuildError(
            f"{shown} failed in {_failed_cell(src, e)}: {e.ename}: {e.evalue}. "
            f"Its output up to the error: {dst}." + (f" Rerun it alone: {rerun}" if rerun else "")
        ) from None
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


# What a chapter's outputs depend on besides its own code cells: the library, the configs, the sweep
# definitions and records (chapter 9 and the landing page read them), and the sweeps' results.
_INPUTS = ("cpmc_lib", "configs", "papermill_runs")
_INPUT_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".csv")


def inputs_digest(root: Path = ROOT) -> str:
    """One digest of every file of :data:`_INPUTS` that a chapter can read (the library's code, the
    configs, the sweeps and their records) and of the Python and package versions; made once a build."""
    from importlib.metadata import version

    h = hashlib.sha256(f"{sys.version}|{version('torch')}|{version('numpy')}|{version('matplotlib')}".encode())
    for folder in _INPUTS:
        for path in sorted((root / folder).rglob("*")):
            if path.suffix in _INPUT_SUFFIXES and path.is_file() and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(root)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()


def chapter_key(notebook: Path, parameters: dict, inputs: str) -> str:
    """The cache key of a chapter's executed outputs; Markdown text is left out of it.

    It covers the notebook's cells in order (their ids and types, the code cells' text), the
    parameters and ``inputs`` (:func:`inputs_digest`). Editing a chapter's prose keeps the key, so a
    rebuild reuses its outputs; any other change runs it again.
    """
    h = hashlib.sha256(inputs.encode())
    for cell in json.loads(notebook.read_text())["cells"]:
        h.update(f"{cell.get('id')}:{cell['cell_type']}\n".encode())
        if cell["cell_type"] == "code":
            h.update("".join(cell["source"]).encode())
    h.update(json.dumps(parameters, sort_keys=True).encode())
    return h.hexdigest()


def reuse_executed(cached: Path, src: Path, dst: Path, key: str) -> bool:
    """Copy the executed ``cached`` notebook to ``dst`` when it was made under ``key``, with the
    Markdown cells of ``src`` (the prose as it is now) in place of its own; False when it cannot."""
    if not cached.is_file():
        return False
    nb = json.loads(cached.read_text())
    if nb.get("metadata", {}).get("cpmc_build", {}).get("key") != key:
        return False
    prose = {c["id"]: c["source"] for c in json.loads(src.read_text())["cells"]
             if c["cell_type"] == "markdown" and "id" in c}  # fmt: skip
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown" and cell.get("id") in prose:
            cell["source"] = prose[cell["id"]]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False))
    return True


def _remember(executed: Path, cached: Path, key: str) -> None:
    """Keep a copy of a chapter that ran, stamped with its key, for the next build (atomically)."""
    nb = json.loads(executed.read_text())
    nb.setdefault("metadata", {})["cpmc_build"] = {"key": key}
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False))
    os.replace(tmp, cached)


def write_figures(folder: Path) -> list[Path]:
    """Draw the book's static figures into ``folder`` (``book/_static`` holds the README's copy:
    ``python -m cpmc_lib.book figures`` refreshes it); returns their paths."""
    from ..diagrams import plot_calibration_regions, plot_pipeline

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in (("pipeline.png", plot_pipeline), ("regions.png", plot_calibration_regions)):
        paths.append(folder / name)
        draw().savefig(paths[-1], dpi=150, metadata={"Software": None})  # no version stamp: same bytes
    return paths


def _run_jupyter_book(book_dir: Path) -> None:
    """``jupyter-book build`` of ``book_dir`` into ``book_dir/_build/html``."""
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(book_dir), "--builder", "html"]
    if subprocess.run(cmd).returncode != 0:
        raise BookBuildError(f"jupyter-book build of {book_dir} failed (its output is above)")


def _swap_in(new: Path, dest: Path) -> None:
    """Put the finished ``new`` folder at ``dest``; the previous ``dest`` is removed only afterwards."""
    old = dest.with_name(f".{dest.name}.previous")
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        os.replace(dest, old)
    os.replace(new, dest)
    if old.exists():
        shutil.rmtree(old)


def build_book(
    quick: bool = False, out: Path = ROOT / "build", execute: bool = True, root: Path = ROOT, fresh: bool = False
) -> Path:
    """Execute the chapters and build the HTML book under ``out``; returns the index page path.

    Everything is built in ``out/.book.building`` and swapped in as ``out/book`` at the end, so a
    failing notebook (:class:`BookBuildError`) leaves the previous book as it was. A chapter whose
    :func:`chapter_key` is that of its last run is not executed again: its outputs are reused from
    ``out/.executed/`` with its current prose (``fresh`` executes every chapter).

    Args:
        root: the repository (``book/``, ``notebooks/``, ``configs/``); notebooks run there.
    """
    src_book = root / "book"
    toc = yaml.safe_load((src_book / "_toc.yml").read_text())
    files = toc_files(toc)
    dest, staging = out / "book", out / ".book.building"
    if staging.exists():  # an earlier build that failed: the build's own scratch folder
        shutil.rmtree(staging)
    shutil.copytree(src_book, staging, ignore=shutil.ignore_patterns("_build"))
    write_figures(staging / "_static")  # drawn from the declarations at every build: never stale

    present, missing = set(), []
    params = {"config_path": CONFIGS[quick]}
    inputs = inputs_digest(root) if execute else ""
    for f in [*files[1:], files[0]]:  # the root summarises the chapters: it runs last
        if f.startswith("notebooks/"):
            nb = root / f"{f}.ipynb"
            if not nb.exists():
                missing.append(f"{f}.ipynb")
                continue
            if execute:
                key = chapter_key(nb, params, inputs)
                cached = out / ".executed" / Path(params["config_path"]).stem / f"{f}.ipynb"
                if not fresh and reuse_executed(cached, nb, staging / f"{f}.ipynb", key):
                    print(f"reusing {f}.ipynb (its code, the library, configs and records unchanged)", flush=True)
                else:
                    print(f"executing {f}.ipynb ...", flush=True)
                    rerun = rerun_command(f"{f}.ipynb", quick)
                    secs = execute_notebook(nb, staging / f"{f}.ipynb", params, cwd=root, rerun=rerun)
                    _remember(staging / f"{f}.ipynb", cached, key)
                    print(f"  done in {secs:.0f} s", flush=True)
            else:
                (staging / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(nb, staging / f"{f}.ipynb")
            present.add(f)
        elif any((src_book / f"{f}{ext}").exists() for ext in (".md", ".ipynb", ".rst")):
            present.add(f)
        else:
            missing.append(f"book/{f}.md")
    (staging / "_toc.yml").write_text(yaml.safe_dump(_prune_toc(toc, present), sort_keys=False))

    _run_jupyter_book(staging)
    _swap_in(staging, dest)
    index = dest / "_build" / "html" / "index.html"
    if missing:
        print("chapters not written yet (left out of this build):\n  " + "\n  ".join(missing))
    print(f"book: {index}")
    return index


def execute_alone(
    notebook: str | Path, quick: bool = False, out: Path = ROOT / "build", root: Path = ROOT
) -> Path:
    """Execute one chapter as the book build would, into ``out/executed/``; the book is not touched."""
    src = Path(notebook)
    src = src if src.is_absolute() else root / src
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such notebook; the chapters are notebooks/<nn>_<name>.ipynb")
    dst = out / "executed" / src.name
    print(f"executing {src} ...", flush=True)
    secs = execute_notebook(src, dst, {"config_path": CONFIGS[quick]}, cwd=root)
    print(f"  done in {secs:.0f} s: {dst}", flush=True)
    return dst
