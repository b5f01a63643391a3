"""The producer package's imports run one way, and its folders keep their roles.

Every import counts: at module level, inside a function, and under
``if TYPE_CHECKING:`` (a circle that only type checking sees is still a circle
a reader must untangle). The checks read the source; no import runs.

- no module of ``producer/`` is in an import cycle (``client -> job -> reader
  -> job`` was one; ``producer.handle`` broke it);
- the library a user imports (``producer/`` and ``producer/executor/``) never
  imports the operators' side (``producer/ops/``);
- ``producer/`` and ``worker/`` never import each other: they agree only
  through ``taskfan/``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

from tests.cli_support import REPO


def _modules(package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package``."""
    found = {}
    for path in sorted((REPO / package).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(tree: ast.AST) -> set[str]:
    """Every name an import statement anywhere in ``tree`` imports: ``M`` for
    ``import M``, ``M.N`` for ``from M import N`` (N a module, or a name that
    module ``M`` holds: ``_graph`` tells which)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (a name that is not a
    module counts as the module that holds it)."""

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = {owner(name) for name in _imported(tree)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each group of modules that import each other, as a path
    ``a -> b -> ... -> a`` (depth-first search, colours white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                found.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def _offending_imports(package: str, forbidden: Iterable[str]) -> list[str]:
    forbidden = tuple(forbidden)
    offenders = []
    for module, path in _modules(package).items():
        for name in sorted(_imported(ast.parse(path.read_text(), str(path)))):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                offenders.append(f"{module} imports {name}")
    return offenders


def test_the_producer_package_has_no_import_cycle() -> None:
    cycles = _cycles(_graph(_modules("producer")))
    assert cycles == [], "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_library_never_imports_the_operators_side() -> None:
    library = {m: p for m, p in _modules("producer").items() if not m.startswith("producer.ops")}
    graph = _graph(_modules("producer"))
    bad = [f"{m} imports {t}" for m in library for t in graph[m] if t.startswith("producer.ops")]
    assert bad == []


def test_producer_and_worker_never_import_each_other() -> None:
    assert _offending_imports("producer", ["worker"]) == []
    assert _offending_imports("worker", ["producer"]) == []


def test_the_checks_find_a_cycle_and_a_type_checking_import() -> None:
    """The checks can fail: a circle hidden under TYPE_CHECKING is found."""
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from a.b import C\n")
    assert _imported(tree) == {"typing.TYPE_CHECKING", "a.b.C"}
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
