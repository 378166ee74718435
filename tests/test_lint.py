"""ruff check is clean over the library, tests, benchmarks and notebooks."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def test_ruff_check_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install -e .[dev])")
    out = subprocess.run([ruff, "check", "."], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_notebooks_are_committed_without_outputs():
    import json

    for nb in sorted(Path("notebooks").glob("*.ipynb")) + sorted(Path("papermill_runs").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        assert not any(c.get("outputs") or c.get("execution_count") for c in cells), f"{nb} has outputs"
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells), (
            f"{nb}: no parameters cell"
        )


def test_library_rooms_stay_small():
    """No module of the library over 600 lines, no function over 80: a room that outgrows its job is split."""
    import ast

    for path in sorted(Path("cpmc_lib").rglob("*.py")):
        src = path.read_text()
        assert len(src.splitlines()) <= 600, f"{path}: {len(src.splitlines())} lines"
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"{path}:{node.lineno} {node.name} is {length} lines"
