"""The user-code boundary holds: no ``except Exception`` guards a call into a
user's code or data (a task, a codec's loads/dumps, an import), since a task's
``sys.exit()`` or a value's ``__reduce__`` raising SystemExit would go through it
and end the process (``taskfan.boundary``). And ``describe`` never raises."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from taskfan.boundary import brief, describe
from tests import tasks

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("taskfan", "producer", "worker")

#: names of calls that run a user's code or decode/encode a user's data
USER_CALLS = {
    "call", "_call_once", "fn", "func", "run_chunk", "run_job", "_execute",  # a task
    "loads", "dumps", "load", "dump",  # a codec: __reduce__, __setstate__, ...
    "resolve", "import_module", "import_attribute", "resolve_serializer",  # an import
    "result",  # a pool future: what its process raised
    "format_exception", "str", "repr",  # an exception's own __str__
}  # fmt: skip


def _called(node: ast.AST) -> set[str]:
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            func = sub.func
            if isinstance(func, ast.Name):
                names.add(func.id)
            elif isinstance(func, ast.Attribute):
                names.add(func.attr)
    return names


def _catches_only_exception(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    names = {k.id for k in kinds if isinstance(k, ast.Name)}
    return "Exception" in names and "BaseException" not in names


def _offenders() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Try):
                    continue
                calls = set().union(*(_called(statement) for statement in node.body))
                user = sorted(calls & USER_CALLS)
                for handler in node.handlers:
                    if user and _catches_only_exception(handler):
                        where = f"{path.relative_to(ROOT)}:{handler.lineno}"
                        found.append(f"{where}: except Exception around {', '.join(user)}")
    return found


def _prints(handler: ast.ExceptHandler) -> list[int]:
    """Lines where a handler prints what it caught itself: ``str(exc)``,
    ``repr(exc)`` or ``f"{exc}"`` (taskfan.boundary's brief/describe never raise)."""
    name = handler.name
    lines = []
    for node in ast.walk(ast.Module(body=handler.body, type_ignores=[])):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("str", "repr")
            and node.args
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == name
        ) or (
            isinstance(node, ast.FormattedValue)
            and isinstance(node.value, ast.Name)
            and node.value.id == name
        ):
            lines.append(node.lineno)
    return lines


def test_what_a_boundary_caught_is_printed_only_by_the_boundary_helpers() -> None:
    """An exception caught as BaseException may be the user's: its __str__ may raise."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ExceptHandler) and node.name and _catches_base(node):
                    where = path.relative_to(ROOT)
                    found += [f"{where}:{line}: prints {node.name}" for line in _prints(node)]
    assert found == []


def _catches_base(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(k, ast.Name) and k.id == "BaseException" for k in kinds)


def test_no_except_exception_guards_a_call_into_user_code() -> None:
    """Catch BaseException there (see taskfan.boundary), not Exception."""
    assert _offenders() == []


def test_the_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    source = "try:\n    value = codec.loads(data)\nexcept Exception:\n    value = None\n"
    tree = ast.parse(source)
    handler = next(n for n in ast.walk(tree) if isinstance(n, ast.ExceptHandler))
    statement = next(n for n in ast.walk(tree) if isinstance(n, ast.Try))
    assert "loads" in _called(statement.body[0]) and _catches_only_exception(handler)


@pytest.mark.parametrize(
    ("exc", "type_name", "words"),
    [
        (tasks.BadStrError("x"), "BadStrError", "<exception str() failed: RuntimeError>"),
        (tasks.ExitingStrError("x"), "ExitingStrError", "<exception str() failed: SystemExit>"),
        (tasks.BadReprError("no repr"), "BadReprError", "no repr"),
        (SystemExit(3), "SystemExit", "3"),
        (tasks.CustomBaseError("own"), "CustomBaseError", "own"),
    ],
)
def test_describe_never_raises(exc: BaseException, type_name: str, words: str) -> None:
    try:
        raise exc
    except BaseException as caught:
        failure = describe(caught)
    assert (failure.type, failure.message) == (type_name, words)
    assert "test_describe_never_raises" in failure.traceback
    assert type_name in failure.traceback
    assert brief(exc)
