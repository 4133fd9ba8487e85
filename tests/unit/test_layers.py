"""Imports run downward: read from the source (every import, also those inside functions), not by running it.

The top-level packages of `twoway`, lowest first. A module may import its own package and any package listed
before its own, never one listed after it; peers share a line for reading, but are ordered all the same:

1. foundation: `twoway` itself, `settings`, `logs` (nothing of ours)
2. `kit`: the plumbing every domain shares (database, outbox, records and rules, group commit, batching)
3. `syncstate`: links and the sync log, which the catalog reads and writes and the engine keeps
4. the catalog: `invoices`, then `customers` (a customer's delete first asks about its invoices; an invoice
   names its customer by id only)
5. `connectors`: the external systems, speaking the catalog's neutral records
6. `webhooks`: verify, store, 2xx; a connector reads the event
7. `sync`: the engine
8. `ops`: status, lag, reconcile and the sync operations' routes, which read the engine
9. `dashboard`: shows what ops reads
10. entry points: `models`, `migrations`, `dev`, `api`, `cli`, `__main__`, each using those before it

The emulators stand apart: they import nothing of the rest (their own `emulators.kit` only), and only an
entry point starts them. So the catalog never imports the engine, and the kit nothing above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
LAYERS: tuple[tuple[str, ...], ...] = (
    ("twoway", "settings", "logs"),
    ("kit",),
    ("syncstate",),
    ("invoices", "customers"),
    ("connectors",),
    ("webhooks",),
    ("sync",),
    ("ops",),
    ("dashboard",),
    ("models", "migrations", "dev", "api", "cli", "__main__"),
)
ORDER = [package for layer in LAYERS for package in layer]
ENTRY_POINTS = set(LAYERS[-1])
APART = "emulators"


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


def package(module: str) -> str:
    """The top-level package of a module of ours; `twoway` for the root package itself."""
    return module.split(".")[1] if "." in module else module


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a package listed after the importer's own (or of the emulators, from below the entry
    points), as `importer -> imported`."""
    found = []
    for name, deps in graph.items():
        home = package(name)
        for dep in deps:
            there = package(dep)
            if there == home:
                continue
            if there == APART:
                wrong = home not in ENTRY_POINTS
            else:
                wrong = home == APART or ORDER.index(there) > ORDER.index(home)
            if wrong:
                found.append(f"{name} -> {dep}")
    return sorted(found)


def test_every_package_has_its_layer() -> None:
    assert {package(m) for m in MODULES} == {*ORDER, APART}


def test_imports_run_down_between_every_pair_of_packages() -> None:
    assert upward(GRAPH) == []


def test_the_check_catches_an_upward_import() -> None:
    assert upward({"twoway.kit.db": {"twoway.sync.engine", "twoway.settings"},
                   "twoway.invoices.service": {"twoway.customers.models", "twoway.kit.outbox"},
                   "twoway.sync.worker": {"twoway.emulators.stripe.app"},
                   "twoway.emulators.stripe.app": {"twoway.emulators.kit", "twoway.kit.db"},
                   "twoway.cli": {"twoway.emulators.stripe.cli", "twoway.api"}}) == [
        "twoway.emulators.stripe.app -> twoway.kit.db", "twoway.invoices.service -> twoway.customers.models",
        "twoway.kit.db -> twoway.sync.engine", "twoway.sync.worker -> twoway.emulators.stripe.app"]


def test_the_catalog_never_reaches_the_engine() -> None:
    """Nothing the catalog imports, directly or through another module, is of a package above it."""
    below = set(ORDER[: ORDER.index("customers") + 1])
    for name in MODULES:
        if package(name) in {"customers", "invoices"}:
            assert {m for m in _reachable(name) if package(m) not in below} == set(), name


def test_metric_definitions_are_a_leaf() -> None:
    assert GRAPH["twoway.kit.metrics"] == set()


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
