"""The node's scheduling core stays pure: no Redis, no clock of its own.

The scheduler and its parts (held books, chunk queue, chunk results, job
ends), intake, recorder, retry heap, chunk sizing, decoded budget, liveness
books, demand and the core types (``worker.core.batches``) decide what to run and
what a batch's outcome is; the Redis I/O and the threads live around
them. These checks read the source (no import runs): a core module, or anything
it imports at run time (``TYPE_CHECKING`` blocks aside), must not import
``redis``, a source of batches (``worker.sources``) or the node's heartbeat thread,
and a core module must not call ``time.*`` itself: the clock is an argument
(``clock``, ``now``), so tests drive the core's time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.cli_support import REPO

#: the pure core: what decides, given deliveries, results and the time: every
#: module of worker/core/, and the node's demand (when to read, worker/node/)
CORE = [
    *sorted(f"worker.core.{p.stem}" for p in (REPO / "worker" / "core").glob("[!_]*.py")),
    "worker.node.demand",
]
#: what the core may not import, directly or through what it imports: Redis, any
#: source of batches (the queue streams' Redis I/O, RQ), the node's heartbeat thread
FORBIDDEN = (
    "redis",
    "rq",
    "worker.sources",
    "worker.node.heartbeat",
)


def test_the_core_is_the_folder() -> None:
    """The folder holds what the docs say the core is (no module lost in a move)."""
    for name in ("batches", "scheduler", "intake", "recorder", "retries", "chunk_sizing"):
        assert f"worker.core.{name}" in CORE


def _source(module: str) -> Path | None:
    """The file of one of our modules (taskfan, producer, worker), else None."""
    path = REPO / Path(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.Module) -> set[str]:
    """Modules a file imports when it runs (imports inside functions included,
    those under ``if TYPE_CHECKING:`` not)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _import_chain(start: str) -> dict[str, str]:
    """Every module of ours ``start`` imports at run time, transitively, with the
    module that imported it (for the failure message)."""
    seen = {start: ""}
    todo = [start]
    while todo:
        module = todo.pop()
        path = _source(module)
        if path is None:
            continue
        for name in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if name not in seen:
                seen[name] = module
                if name.split(".")[0] in ("taskfan", "producer", "worker"):
                    todo.append(name)
    return seen


def _chain(seen: dict[str, str], name: str) -> str:
    path = [name]
    while seen.get(path[-1]):
        path.append(seen[path[-1]])
    return " <- ".join(path)


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_redis(module: str) -> None:
    seen = _import_chain(module)
    bad = [
        _chain(seen, name)
        for name in seen
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    ]
    assert not bad, f"{module} imports Redis I/O: {bad}"


@pytest.mark.parametrize("module", CORE)
def test_the_core_calls_no_clock_of_its_own(module: str) -> None:
    path = _source(module)
    assert path is not None
    tree = ast.parse(path.read_text(), str(path))
    calls = [
        f"line {node.lineno}: time.{node.func.attr}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "time"
    ]
    from_time = [
        f"line {node.lineno}: from time import ..."
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "time"
    ]
    assert not calls + from_time, f"{module} reads the clock itself: {calls + from_time}"


def test_the_checks_see_a_forbidden_import_and_a_clock_call() -> None:
    """The checks can fail: they find what they look for in a module that has it."""
    seen = _import_chain("worker.node.heartbeat")
    assert "redis" in seen
    tree = ast.parse("import time\nif TYPE_CHECKING:\n    import redis\nx = time.monotonic()\n")
    assert _runtime_imports(tree) == {"time"}
