"""CPython's ``ExecutorTest`` (``executor.py``) and the generic part of
``ProcessPoolExecutorTest``, on a node."""

from __future__ import annotations

import threading
import time
import weakref
from concurrent import futures
from typing import Any

import pytest

from producer import Executor
from tests.stdlib_futures import calls
from tests.stdlib_futures.conftest import WORKER_COUNT

SHORT_TIMEOUT = 30.0


def test_submit(executor: Executor) -> None:
    future = executor.submit(pow, 2, 8)
    assert future.result() == 256


def test_submit_keyword(executor: Executor) -> None:
    future = executor.submit(calls.mul, 2, y=8)
    assert future.result() == 16
    future = executor.submit(calls.capture, 1, self=2, fn=3)
    assert future.result() == ((1,), {"self": 2, "fn": 3})
    with pytest.raises(TypeError):
        executor.submit(fn=calls.capture, arg=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        executor.submit(arg=1)  # type: ignore[call-arg]


def test_map(executor: Executor) -> None:
    assert list(executor.map(pow, range(10), range(10))) == list(map(pow, range(10), range(10)))
    assert list(executor.map(pow, range(10), range(10), chunksize=3)) == list(
        map(pow, range(10), range(10))
    )


def test_map_exception(executor: Executor) -> None:
    i = executor.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
    assert i.__next__() == (0, 1)
    assert i.__next__() == (0, 1)
    with pytest.raises(ZeroDivisionError):
        i.__next__()


def test_map_timeout(executor: Executor) -> None:
    results = []
    try:
        for i in executor.map(time.sleep, [0, 0, 6], timeout=5):
            results.append(i)
    except futures.TimeoutError:
        pass
    else:
        pytest.fail("expected TimeoutError")
    assert results == [None, None]


def test_shutdown_race_issue12456(executor: Executor) -> None:
    executor.map(str, [2] * (WORKER_COUNT + 1))
    executor.shutdown()


def test_no_stale_references(executor: Executor) -> None:
    my_object = calls.MyObject()
    my_object_collected = threading.Event()
    my_object_callback = weakref.ref(my_object, lambda obj: my_object_collected.set())
    # Deliberately discarding the future.
    # ADAPTED: a bound method becomes a function of the object (calls.call_my_method).
    executor.submit(calls.call_my_method, my_object)
    del my_object
    collected = my_object_collected.wait(timeout=SHORT_TIMEOUT)
    assert collected, "Stale reference not collected within timeout."
    del my_object_callback


def test_max_workers_negative(redis_url: str) -> None:
    for number in (0, -1):
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            Executor(redis_url, max_workers=number)


def test_free_reference(executor: Executor) -> None:
    # Issue #14406: Result iterator should not keep an internal
    # reference to result objects.
    for obj in executor.map(calls.make_dummy_object, range(10)):
        wr = weakref.ref(obj)
        del obj
        assert wr() is None


# --- ProcessPoolExecutorTest, what applies to any pool


def test_map_chunksize(executor: Executor) -> None:
    def bad_map() -> None:
        list(executor.map(pow, range(40), range(40), chunksize=-1))

    ref = list(map(pow, range(40), range(40)))
    assert list(executor.map(pow, range(40), range(40), chunksize=6)) == ref
    assert list(executor.map(pow, range(40), range(40), chunksize=50)) == ref
    assert list(executor.map(pow, range(40), range(40), chunksize=40)) == ref
    with pytest.raises(ValueError):
        bad_map()


def test_traceback(executor: Executor, capsys: pytest.CaptureFixture[str]) -> None:
    # We want ensure that the traceback from the child process is
    # contained in the traceback raised in the main process.
    future = executor.submit(calls.raise_runtime_error_123)
    with pytest.raises(Exception) as cm:
        future.result()

    exc: Any = cm.value
    assert type(exc) is RuntimeError
    assert exc.args == (123,)
    cause = exc.__cause__
    assert type(cause) is futures.process._RemoteTraceback
    assert "raise RuntimeError(123)  # some comment" in cause.tb

    import sys

    try:
        raise exc
    except RuntimeError:
        sys.excepthook(*sys.exc_info())
    assert "raise RuntimeError(123)  # some comment" in capsys.readouterr().err
