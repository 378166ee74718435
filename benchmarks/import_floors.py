"""The import graph of ``cpmc_lib`` as floors: modules that import nothing of the package first.

Every ``import`` statement counts, at the top of a module or inside a function, except those under
``if TYPE_CHECKING:`` (read by type checkers only, never run). A module's floor
is one above the highest floor of the modules it imports, so each floor imports only from the
floors below it; the modules of an import cycle share a floor, shown as ``[a b c]``.

Usage::

    python benchmarks/import_floors.py [PACKAGE_DIR]     # default: cpmc_lib
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

__all__ = ["floors", "import_graph", "module_files"]


def module_files(package: Path) -> dict[str, Path]:
    """Module name -> file: ``x`` for ``x.py``; a sub-package ``p`` is the module ``p`` (its
    ``__init__.py``) and its files are ``p.x`` (``__init__`` and ``__main__`` of the package itself left out)."""
    files = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        if any(not (package.joinpath(*parts[:i]) / "__init__.py").exists() for i in range(1, len(parts))):
            continue  # not inside a sub-package
        if parts[-1] == "__init__" and len(parts) > 1:
            files[".".join(parts[:-1])] = path
        elif not parts[-1].startswith("__"):
            files[".".join(parts)] = path
    return files


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` but the bodies of ``if TYPE_CHECKING:`` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``__init__`` and ``__main__`` left out; the modules
    of a sub-package ``p`` as ``p.x``, its ``__init__`` as ``p``)."""
    files = module_files(package)
    name = package.name

    def owner(dotted: str) -> str:  # the module a dotted name belongs to: its longest prefix that is one
        while dotted and dotted not in files:
            dotted = dotted.rpartition(".")[0]
        return dotted

    graph: dict[str, set[str]] = {}
    for m in sorted(files):
        parent = m if files[m].name == "__init__.py" else m.rpartition(".")[0]
        deps: set[str] = set()
        for node in _runtime_nodes(ast.parse(files[m].read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = parent.split(".") if parent else []
                    mod = [node.module] if node.module else []
                    base = ".".join([*parts[: len(parts) - node.level + 1], *mod])
                elif node.module == name or (node.module or "").startswith(f"{name}."):
                    base = node.module.removeprefix(name).lstrip(".")
                else:
                    continue
                deps |= {owner(f"{base}.{a.name}" if base else a.name) for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {owner(a.name.removeprefix(f"{name}.")) for a in node.names if a.name.startswith(f"{name}.")}
        graph[m] = (deps & set(files)) - {m}
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
