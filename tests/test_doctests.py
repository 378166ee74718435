"""The documented examples run: every ``>>>`` example in the library's docstrings (those marked
``# doctest: +SKIP`` need a trained run and are only read)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import cpmc_lib

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(cpmc_lib.__path__, "cpmc_lib.") if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (pytest --doctest-modules {name.replace('.', '/')}.py)"
