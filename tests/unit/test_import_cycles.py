"""No import cycles among Glimpse's own modules, lazy imports inside functions included (issue 25).

Read from the source with ``ast``, not by importing: every ``import`` statement anywhere in a file is an edge,
except those under ``if TYPE_CHECKING:`` (never run). ``import a.b.c`` and ``from a.b import c`` where ``c`` is
a module are edges to that module; ``from a.b import name`` is an edge to ``a.b``. Importing a module also
runs its packages' ``__init__``: an edge to a package counts only when that ``__init__`` imports something.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("glimpse", "indexer", "search", "web", "training", "bench")


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: anywhere, functions included, but not under TYPE_CHECKING."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _imports(node)


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    trees = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in modules.items()}
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    importing_packages = {name for name in packages if any(True for _ in _imports(trees[name]))}

    def targets(name: str) -> set[str]:
        """The module ``name`` and the packages above it whose __init__ imports something."""
        found = {p for p in _parents(name) if p in importing_packages}
        if name in modules and (name not in packages or name in importing_packages):
            found.add(name)
        return found

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, tree in trees.items():
        here = name if name in packages else name.rpartition(".")[0]
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    graph[name] |= targets(alias.name)
                continue
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                graph[name] |= targets(full) if full in modules else targets(base)
        graph[name].discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_the_graph_sees_lazy_relative_and_package_imports():
    graph = import_graph()
    assert "search.store.database" in graph["search.engine"]  # a module-level import
    assert "search.engine" in graph["glimpse.search_command"]  # one inside a function
    # Their __init__s import nothing: importing search.engine does not count as importing "search".
    assert not any(name in {"search", "web", "indexer"} for targets in graph.values() for name in targets)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (each line: the modules that import one another):\n" + "\n".join(
        " <-> ".join(component) for component in found
    )
