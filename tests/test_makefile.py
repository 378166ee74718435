"""The Makefile's set-up on a fresh machine: system packages installed as root, named otherwise.

Runs the real ``make system-test`` / ``make system`` recipes with a PATH of stand-ins: ``id`` (the
user), ``apt-get`` (logs its calls), and ``g++`` / ``chromium-headless-shell`` where a case has them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).resolve().parent.parent / "Makefile"
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def _script(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def _make(tmp_path, target="system-test", uid=0, have=("g++", "chromium-headless-shell"), ci=None):
    """Run ``make target``; returns (exit code, output, apt-get calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "apt.log"
    _script(bin_dir / "id", f"echo {uid}")
    _script(bin_dir / "apt-get", f'echo "$*" >> {log}')
    for tool in have:
        _script(bin_dir / tool, "exit 0")
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    if ci is not None:
        env["CI"] = ci
    cmd = [shutil.which("make"), "-s", "-f", str(MAKEFILE), target, f"PYTHON={sys.executable}",
           f"VENV={tmp_path / 'venv'}", "CHROMIUM_PATHS=/nonexistent/chromium"]  # fmt: skip
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return out.returncode, out.stdout + out.stderr, calls


def test_nothing_missing_does_nothing(tmp_path):
    assert _make(tmp_path) == (0, "", [])
    assert _make(tmp_path, ci="true") == (0, "", [])


def test_as_root_missing_packages_are_installed_after_one_update(tmp_path):
    code, out, calls = _make(tmp_path, have=())
    assert code == 0, out
    assert calls[0] == "update -qq" and sum(c.startswith("update") for c in calls) == 1
    installs = [c for c in calls if c.startswith("install")]
    assert "build-essential" in installs[0] and "chromium-headless-shell" in installs[-1]


def test_not_root_names_what_to_install_and_stops(tmp_path):
    code, out, calls = _make(tmp_path, uid=1000, have=("chromium-headless-shell",))
    assert code != 0 and calls == []
    assert "sudo apt-get install build-essential" in out


def test_browser_is_optional_outside_ci_and_required_in_ci(tmp_path):
    code, out, calls = _make(tmp_path, uid=1000, have=("g++",))
    assert code == 0 and "browser check of the book is skipped" in out and calls == []
    code, out, calls = _make(tmp_path, uid=1000, have=("g++",), ci="true")
    assert code != 0 and "sudo apt-get install chromium-headless-shell" in out and calls == []
    # the install itself (make book) never asks for the browser
    assert _make(tmp_path, target="system", uid=1000, have=("g++",), ci="true") == (0, "", [])


def test_python_without_venv_support_is_named(tmp_path):
    fake = tmp_path / "python3"  # a Python whose venv module is missing (Debian without python3-venv)
    _script(fake, f'[[ "$*" == *ensurepip* ]] && exit 1; exec {sys.executable} "$@"')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "id", "echo 1000")
    _script(bin_dir / "g++", "exit 0")
    cmd = [
        shutil.which("make"),
        "-s",
        "-f",
        str(MAKEFILE),
        "system",
        f"PYTHON={fake}",
        f"VENV={tmp_path / 'v'}",
    ]
    out = subprocess.run(cmd, cwd=tmp_path, env={"PATH": str(bin_dir)}, capture_output=True, text=True)
    assert out.returncode != 0 and "python3-venv" in out.stdout


def test_torch_index_installs_torch_from_that_index_first(tmp_path):
    """make install TORCH_INDEX=URL (e.g. PyTorch's CPU index) takes torch and torchvision from URL
    before the project; without it nothing extra is installed (a dry run: nothing is executed)."""
    make = shutil.which("make")
    base = [make, "-n", "-f", str(MAKEFILE), "install", f"VENV={tmp_path / 'venv'}"]
    cpu = subprocess.run([*base, "TORCH_INDEX=https://download.pytorch.org/whl/cpu"], cwd=MAKEFILE.parent,
                         capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    assert "pip install --quiet torch torchvision --index-url https://download.pytorch.org/whl/cpu" in cpu
    assert cpu.index("--index-url") < cpu.index('-e ".[dev,baselines]"')
    plain = subprocess.run(base, cwd=MAKEFILE.parent, capture_output=True, text=True, timeout=60).stdout
    assert "--index-url" not in plain and '-e ".[dev,baselines]"' in plain
