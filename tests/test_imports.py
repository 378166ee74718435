"""The package's shape: imports flow one way, stages never run each other, no import strings.

The import graph is read with ``ast`` from every ``import`` statement of ``cpmc_lib`` that runs, at
the top of a module or inside a function (``benchmarks/import_floors.py`` reads it and prints it as
floors; imports under ``if TYPE_CHECKING:`` never run and do not count).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import cpmc_lib

PACKAGE = Path(cpmc_lib.__file__).parent


def _import_floors():
    """benchmarks/import_floors.py, the graph reader, as a module (benchmarks are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "import_floors.py"
    spec = importlib.util.spec_from_file_location("import_floors", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FLOORS = _import_floors()
FILES = FLOORS.module_files(PACKAGE)
MODULES = set(FILES)
GRAPH = FLOORS.import_graph(PACKAGE)
STAGES = {s.run.__module__.removeprefix("cpmc_lib.") for s in cpmc_lib.stages.STAGES.values()}  # stage modules


def tree(module: str) -> ast.Module:
    return ast.parse(FILES[module].read_text())


def imported(module: str) -> set[str]:
    """The cpmc_lib modules ``module`` imports anywhere in its file at run time (relative imports
    resolved, so ``from .text import fmt`` in ``report.checks`` is ``report.text``)."""
    return GRAPH[module]


def test_import_graph_has_no_cycle():
    graph = {m: imported(m) for m in MODULES}
    placed: set[str] = set()
    while True:  # peel the floors: modules whose imports are all placed
        floor = {m for m in graph if m not in placed and graph[m] <= placed}
        if not floor:
            break
        placed |= floor
    assert placed == MODULES, f"import cycle among {sorted(MODULES - placed)}"


def test_graph_reader_sees_imports_inside_functions_and_skips_type_checking_ones():
    assert "synth" in imported("explorer")  # inside a method only
    assert "cam_methods" in imported("config")  # inside PseudoConfig.__post_init__: the registry of methods
    assert imported("cam_methods") >= {"cpmc", "models"}
    assert "store" not in imported("cams")  # `if TYPE_CHECKING: from .store import RunStore`
    assert "config" not in imported("cam_methods")  # the same: so that config may read the registry


def test_the_stage_table_wires_every_stage_module_and_every_cam_method():
    from cpmc_lib import stages
    from cpmc_lib.cam_methods import CAM_METHODS

    assert STAGES == {"pretrain", "classifier", "cams", "pseudo", "segmentation"}
    assert set(stages.STAGES) == {"pretrain", "classifier", "cams", "pseudo", "segmentation", "segmentation_gt"}
    for s in stages.STAGES.values():  # every stage runs from its module, with a command of its own
        assert s.run.__name__ in ("run", "run_gt") and s.command and s.help and s.step in stages.STEPS
    assert len({s.command for s in stages.STAGES.values()}) == len(stages.STAGES)
    for cls in CAM_METHODS.values():  # every method has a title and its sections exist in the config
        assert cls.title and set(cls.sections) <= set(cpmc_lib.Config().to_dict())


def test_no_stage_imports_another_stage_module():
    for stage in STAGES:
        assert not (imported(stage) & (STAGES - {stage})), f"{stage} imports {imported(stage) & STAGES}"


def test_graph_reader_sees_the_modules_of_sub_packages():
    assert {"report", "report.text", "report.checks", "book", "book.build"} <= MODULES
    assert "report" in imported("pipeline")  # from .report import ...: the package's __init__
    assert imported("report") >= {"report.text", "report.checks", "report.sweeps"}  # its re-exports
    assert imported("report.checks") >= {"report.text", "report.maps", "report.labels"}  # from .text import ...
    assert "progress" in imported("book.build")  # from ..progress import ..., inside a function


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
