"""The import graph of ``cpmc_lib`` as floors: modules that import nothing of the package first.

Every ``import`` statement counts, at the top of a module or inside a function. A module's floor
is one above the highest floor of the modules it imports, so each floor imports only from the
floors below it; the modules of an import cycle share a floor, shown as ``[a b c]``.

Usage::

    python benchmarks/import_floors.py [PACKAGE_DIR]     # default: cpmc_lib
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

__all__ = ["floors", "import_graph"]


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``__init__`` and ``__main__`` left out)."""
    modules = {p.stem for p in package.glob("*.py") if not p.stem.startswith("__")}
    name = package.name
    graph: dict[str, set[str]] = {}
    for m in sorted(modules):
        deps: set[str] = set()
        for node in ast.walk(ast.parse((package / f"{m}.py").read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 or node.module == name or (node.module or "").startswith(f"{name}."):
                    base = (node.module or "") if node.level else (node.module or "").removeprefix(name)
                    base = base.lstrip(".").split(".")[0]
                    targets = [base] if base else [a.name for a in node.names]
                    deps |= {t for t in targets if t in modules}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith(f"{name}.")}
        graph[m] = deps - {m}
    return graph


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for d in graph[todo.pop()]:
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def floors(graph: dict[str, set[str]]) -> tuple[list[list[str]], list[list[str]]]:
    """(floors bottom-up, import cycles). A cycle's modules share one floor, shown as ``[a b c]``."""
    reach = {m: _reach(graph, m) for m in graph}
    cycles = sorted(
        {tuple(sorted({m} | {o for o in reach[m] if m in reach[o]})) for m in graph if m in reach[m]}
    )
    group = {m: c for c in cycles for m in c}
    placed: set[str] = set()
    layers: list[list[str]] = []
    while len(placed) < len(graph):
        layer = set()
        for m in graph:
            if m in placed:
                continue
            members = set(group.get(m, (m,)))
            if set().union(*(graph[x] for x in members)) - members <= placed:
                layer.add(group.get(m, (m,)))
        layers.append(sorted(f"[{' '.join(g)}]" if len(g) > 1 else g[0] for g in layer))
        placed |= {m for g in layer for m in g}
    return layers, [list(c) for c in cycles]


def main() -> None:
    package = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "cpmc_lib")
    layers, cycles = floors(import_graph(package))
    for i, layer in enumerate(layers):
        print(f"floor {i}: {' '.join(layer)}")
    for c in cycles:
        print(f"import cycle: {' '.join(c)}")


if __name__ == "__main__":
    main()
