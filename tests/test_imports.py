"""The package's shape: imports flow one way, stages never run each other, no import strings.

The import graph is read with ``ast`` from every ``import`` statement of ``cpmc_lib``, at the top
of a module or inside a function (``benchmarks/import_floors.py`` prints it as floors).
"""

from __future__ import annotations

import ast
from pathlib import Path

import cpmc_lib

PACKAGE = Path(cpmc_lib.__file__).parent
MODULES = {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__")}
STAGES = {"pretrain", "classifier", "cams", "affinity", "pseudo", "segmentation"}  # modules with a stage run()


def tree(module: str) -> ast.Module:
    return ast.parse((PACKAGE / f"{module}.py").read_text())


def imported(module: str) -> set[str]:
    """The cpmc_lib modules ``module`` imports anywhere in its file."""
    deps = set()
    for node in ast.walk(tree(module)):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("cpmc_lib")):
            path = (node.module or "").removeprefix("cpmc_lib").lstrip(".").split(".")[0]
            deps |= {path} if path else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("cpmc_lib.")}
    return (deps & MODULES) - {module}


def test_import_graph_has_no_cycle():
    graph = {m: imported(m) for m in MODULES}
    placed: set[str] = set()
    while True:  # peel the floors: modules whose imports are all placed
        floor = {m for m in graph if m not in placed and graph[m] <= placed}
        if not floor:
            break
        placed |= floor
    assert placed == MODULES, f"import cycle among {sorted(MODULES - placed)}"


def test_graph_reader_sees_imports_inside_functions():
    assert "cams" in imported("pseudo")  # pseudo imports cams inside a function only
    assert imported("cam_methods") >= {"cpmc", "models", "config"}


def stage_runs_called(stage: str, source: ast.Module) -> set[str]:
    """The other stages whose ``run`` the module ``stage`` calls (as ``x.run(...)`` or an imported ``run``)."""
    modules, runs = {}, {}  # local name -> stage module
    for node in ast.walk(source):
        if isinstance(node, ast.ImportFrom) and node.level:
            for a in node.names:
                if node.module is None and a.name in STAGES - {stage}:  # from . import cams
                    modules[a.asname or a.name] = a.name
                elif node.module in STAGES - {stage} and a.name == "run":  # from .cams import run
                    runs[a.asname or a.name] = node.module
    called = set()
    for node in ast.walk(source):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr == "run" and isinstance(f.value, ast.Name):
                called |= {modules[f.value.id]} if f.value.id in modules else set()
            elif isinstance(f, ast.Name) and f.id in runs:
                called.add(runs[f.id])
    return called


def test_no_stage_runs_another_stage():
    for stage in STAGES:
        assert not stage_runs_called(stage, tree(stage)), (
            f"{stage} runs {stage_runs_called(stage, tree(stage))}"
        )
        assert "pipeline" not in imported(stage), f"{stage} imports the pipeline"


def test_stage_run_check_catches_a_chained_run():
    chained = ast.parse("from . import classifier\ndef run(cfg, store):\n    classifier.run(cfg, store)\n")
    aliased = ast.parse("from .pseudo import run as make_pseudo\ndef run(cfg):\n    make_pseudo(cfg)\n")
    assert stage_runs_called("cams", chained) == {"classifier"}
    assert stage_runs_called("segmentation", aliased) == {"pseudo"}


def test_no_module_resolves_names_from_import_strings():
    for module in MODULES:
        for node in ast.walk(tree(module)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.startswith("importlib") and n != "importlib.metadata" for n in names), module
