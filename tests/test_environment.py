"""environment.yml (conda) lists the same packages as pyproject.toml (pip)."""

import re

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

CONDA_TO_PIP = {"pytorch": "torch"}
NOT_PACKAGES = {"python", "pip", "-e .", "cxx-compiler"}  # the compiler builds pydensecrf2


def _name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ;]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.load(open("pyproject.toml", "rb"))["project"]
    pip_names = {_name(d) for d in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        pip_names |= {_name(d) for d in extra}
    env = yaml.safe_load(open("environment.yml"))
    conda_names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            conda_names |= {_name(d) for d in dep["pip"] if d.strip() != "-e ."}
        elif _name(dep) not in NOT_PACKAGES:
            conda_names.add(CONDA_TO_PIP.get(_name(dep), _name(dep)))
    assert conda_names == pip_names, (
        f"only in environment.yml: {sorted(conda_names - pip_names)}; "
        f"only in pyproject.toml: {sorted(pip_names - conda_names)}"
    )


def test_environment_yml_takes_everything_from_conda_forge():
    env = yaml.safe_load(open("environment.yml"))
    assert env["channels"] == ["conda-forge"]  # the pytorch channel is deprecated; conda-forge builds PyTorch
    assert "cxx-compiler" in env["dependencies"]  # pydensecrf2 compiles from source
