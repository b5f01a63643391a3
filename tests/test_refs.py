"""Function references: what can travel as ``module:qualname``, and the errors that say why not."""

from __future__ import annotations

import functools
import os
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from taskfan.errors import FunctionReferenceError
from taskfan.refs import reference, resolve
from tests import tasks

F = TypeVar("F", bound=Callable[..., Any])


def test_module_functions_travel_by_module_and_name() -> None:
    assert reference(tasks.add) == "tests.tasks:add"
    assert resolve("tests.tasks:add") is tasks.add


def test_builtins_travel_too() -> None:
    assert reference(pow) == "builtins:pow"
    assert resolve("builtins:pow") is pow


class Holder:
    @staticmethod
    def double(x: int) -> int:
        return 2 * x


def test_qualnames_walk_into_classes() -> None:
    assert reference(Holder.double) == "tests.test_refs:Holder.double"
    assert resolve("tests.test_refs:Holder.double") is Holder.double
    assert resolve("os.path:join") is os.path.join


def test_string_references_pass_unchecked() -> None:
    # A producer need not be able to import what only the workers can.
    assert reference("somewhere.only.workers.have:fn") == "somewhere.only.workers.have:fn"


@pytest.mark.parametrize("bad", ["no_colon", ":fn", "module:", ""])
def test_malformed_string_references_are_refused(bad: str) -> None:
    with pytest.raises(
        FunctionReferenceError, match=re.escape("must look like 'package.module:function'")
    ):
        reference(bad)
    with pytest.raises(FunctionReferenceError, match="must look like"):
        resolve(bad)


def test_lambdas_are_refused_with_the_fix() -> None:
    with pytest.raises(FunctionReferenceError, match="lambda or a nested function") as info:
        reference(lambda x: x)
    assert "define it at the top level of a module" in str(info.value)


def test_nested_functions_are_refused_with_the_fix() -> None:
    def nested(x: int) -> int:
        return x

    with pytest.raises(FunctionReferenceError, match=r"nested.*lambda or a nested function"):
        reference(nested)


def test_a_rebound_name_does_not_lead_back() -> None:
    def wrapper(x: Any) -> Any:
        return tasks.square(x)

    # Pretend it lives in tests.tasks under square's name: the lookup finds square.
    wrapper.__module__, wrapper.__qualname__ = "tests.tasks", "square"
    with pytest.raises(FunctionReferenceError, match="does not lead back"):
        reference(wrapper)


def logged(fn: F) -> F:
    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return cast(F, inner)


@logged
def triple(x: int) -> int:
    return 3 * x


def test_decorated_functions_travel_both_ways() -> None:
    # The module's name holds the wrapper; the original is its __wrapped__.
    original = triple.__wrapped__  # type: ignore[attr-defined]
    assert reference(triple) == "tests.test_refs:triple"
    assert reference(original) == "tests.test_refs:triple"
    assert resolve("tests.test_refs:triple") is triple


def test_non_callables_are_refused() -> None:
    with pytest.raises(FunctionReferenceError, match="is not callable"):
        reference(42)  # type: ignore[arg-type]
    with pytest.raises(FunctionReferenceError, match="names int, not a function"):
        resolve("tests.test_refs:CONSTANT")


CONSTANT = 7


def test_resolve_names_a_missing_module_and_the_fix() -> None:
    with pytest.raises(
        FunctionReferenceError, match="cannot import module 'no_such_module'"
    ) as info:
        resolve("no_such_module:fn")
    assert "--path" in str(info.value)


def test_resolve_names_a_missing_attribute() -> None:
    with pytest.raises(
        FunctionReferenceError,
        match=re.escape("module 'tests.tasks' has no attribute 'nope.deeper'"),
    ):
        resolve("tests.tasks:nope.deeper")


def main_function(monkeypatch: pytest.MonkeyPatch, **attrs: Any) -> Callable[[int], int]:
    """A function that claims to live in a ``__main__`` module with ``attrs``."""
    main = types.ModuleType("__main__")
    for name, value in attrs.items():
        setattr(main, name, value)
    monkeypatch.setitem(sys.modules, "__main__", main)

    def work(x: int) -> int:
        return x

    work.__module__, work.__qualname__ = "__main__", "work"
    return work


def test_main_run_with_dash_m_travels_under_its_module_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = types.SimpleNamespace(name="jobs.score")
    assert reference(main_function(monkeypatch, __spec__=spec)) == "jobs.score:work"
    spec = types.SimpleNamespace(name="jobs.__main__")
    assert reference(main_function(monkeypatch, __spec__=spec)) == "jobs:work"


def test_main_script_travels_under_its_path_below_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "jobs" / "score.py"
    fn = main_function(monkeypatch, __spec__=None, __file__=str(script))
    assert reference(fn) == "jobs.score:work"
    elsewhere = tmp_path.parent / "other-dir" / "score.py"
    fn = main_function(monkeypatch, __spec__=None, __file__=str(elsewhere))
    assert reference(fn) == "score:work"


def test_interactive_functions_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FunctionReferenceError, match="interactive session"):
        reference(main_function(monkeypatch, __spec__=None))
