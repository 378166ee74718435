"""Where the project is: the clone this library runs from, and the working directory its paths need.

A config's paths (``configs/default.yaml`` itself, ``data.root``, ``runs_dir``, weight files) are
relative to the project folder, where ``make book`` runs the chapters. JupyterLab starts each kernel
in the notebook's own folder (``notebooks/``), so a chapter opened from ``make lab`` enters the
project first (:func:`enter_project`): the same relative paths then name the same data and the same
run store, and the stages ``make book`` finished are reused rather than rebuilt elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import ConfigError

__all__ = ["ROOT", "ProjectNotFound", "enter_project"]

ROOT = Path(__file__).resolve().parent.parent  # cpmc_lib/project.py -> the clone (an editable install)


class ProjectNotFound(ConfigError):
    """A relative config path that names no file from here nor from the project."""


def enter_project(config_path: str | os.PathLike, root: Path = ROOT) -> Path | None:
    """Make the project the working directory when ``config_path`` is relative to it, not to here.

    Nothing changes when the path is absolute or names a file from the working directory (the
    command line, ``make book``). Otherwise, when it names a file under ``root``, the working
    directory moves there (a notebook kernel started in ``notebooks/``) and the folder is returned.

    Raises:
        ProjectNotFound: the file is found neither from the working directory nor from ``root``;
            the message names both folders and the fix.
    """
    path = Path(config_path)
    if path.is_absolute() or path.is_file():
        return None
    if (root / path).is_file():
        os.chdir(root)  # the process's working directory: every relative path of the config follows
        return root
    raise ProjectNotFound(
        f"config file {path} not found from the working directory {Path.cwd()} nor from the project "
        f"{root}: run the chapters from the project folder (`make lab` there opens them), or pass "
        f"config_path as an absolute path"
    )
