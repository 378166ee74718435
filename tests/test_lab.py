"""The chapters run where the README sends the reader: JupyterLab, a kernel started in the notebook's folder."""

import json
import os

import pytest

from cpmc_lib.book.browser import require_chromium
from cpmc_lib.book.lab import lab_server, run_in_lab
from cpmc_lib.project import ROOT, ProjectNotFound, enter_project

pytestmark = pytest.mark.book


def test_enter_project_moves_to_the_project_only_when_the_config_is_there(tmp_path, monkeypatch):
    root = tmp_path / "clone"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "default.yaml").write_text("run: default\n")
    (root / "notebooks").mkdir()
    monkeypatch.chdir(root / "notebooks")  # where JupyterLab starts a chapter's kernel
    assert enter_project("configs/default.yaml", root=root) == root and os.getcwd() == str(root)
    assert enter_project("configs/default.yaml", root=root) is None  # already there: nothing moves
    monkeypatch.chdir(tmp_path)
    assert enter_project(root / "configs" / "default.yaml", root=tmp_path / "elsewhere") is None  # absolute
    with pytest.raises(ProjectNotFound, match=r"configs/nope.yaml not found .*make lab"):
        enter_project("configs/nope.yaml", root=root)
    assert os.getcwd() == str(tmp_path)


def test_a_chapter_runs_in_jupyterlab_and_its_explorer_redraws(tmp_path):
    """Chapter 10 opened in JupyterLab from a folder below the project, all cells run, a map clicked."""
    if require_chromium() is None:  # under CI=true a missing browser fails instead of skipping
        pytest.skip("no headless Chromium")
    nb = json.loads((ROOT / "notebooks" / "10_explorer.ipynb").read_text())
    params = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    params["source"] = 'config_path = "configs/quick.yaml"\noverrides = []\nn_images = 8\n'
    folder = ROOT / "build" / "lab-check"  # the project's own build folder; the kernel starts here
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "10_explorer.ipynb").write_text(json.dumps(nb))
    with lab_server(ROOT, tmp_path / "lab.log") as url:
        run = run_in_lab(url, "build/lab-check/10_explorer.ipynb")
    assert run.ran, (run.prompts, run.errors)
    assert run.errors == [] and run.external == []
    assert len(run.drawings) == 2 and run.drawings[0] != run.drawings[1]  # the click redrew the overlay
    assert run.scores[0].startswith("cpmc") and run.scores[1].startswith("cam")
