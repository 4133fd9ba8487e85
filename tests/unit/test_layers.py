"""Imports run downward: read from the source (every import, also those inside functions), not by running it.

foundation (`twoway.settings`, `twoway.logs`: nothing of ours) < `twoway.kit` < domains and ops < entry points.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
FOUNDATION = {"twoway.settings", "twoway.logs"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "twoway").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module of ours that `name` imports, resolving relative imports and `from pkg import module`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    named: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            named.add(module)
            named.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in named if m.split(".")[0] == "twoway" and m in MODULES and m != name}


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, less the bodies of `if TYPE_CHECKING:` (type-only imports never run)."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return nodes


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_is_read() -> None:
    assert "twoway.kit.outbox" in GRAPH["twoway.kit.records"]
    assert "twoway.kit.records" in GRAPH["twoway.customers.models"]


def test_foundation_imports_nothing_of_ours() -> None:
    assert {m: GRAPH[m] for m in FOUNDATION if GRAPH[m]} == {}


def test_kit_imports_only_kit_and_the_foundation() -> None:
    upward = {name: sorted(m for m in deps if not _in(m, "twoway.kit") and m not in FOUNDATION | {"twoway"})
              for name, deps in GRAPH.items() if _in(name, "twoway.kit")}
    assert {k: v for k, v in upward.items() if v} == {}


def test_metric_definitions_are_a_leaf() -> None:
    assert GRAPH["twoway.kit.metrics"] == set()


def test_emulators_import_nothing_of_the_rest() -> None:
    outside = {name: sorted(m for m in deps if not _in(m, "twoway.emulators") and m != "twoway")
               for name, deps in GRAPH.items() if _in(name, "twoway.emulators")}
    assert {k: v for k, v in outside.items() if v} == {}


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components: any component of two or more modules is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = [stack.pop()]
            while component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert cycles == []
    assert "twoway.ops.metrics" not in _reachable("twoway.ops.status")


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen
