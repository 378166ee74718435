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
