"""CPython's ``ExecutorDeadlockTest`` (``test_deadlock.py``): the tests that do
not expect ``BrokenProcessPool`` (a node fails a crashing item alone, and the
pool goes on), on a node."""

from __future__ import annotations

from concurrent import futures
from pickle import PicklingError
from typing import Any

import pytest

from producer import Executor
from tests.stdlib_futures import calls

TIMEOUT = 120.0


def _check_error(redis_url: str, error: type[BaseException], func: Any, *args: Any) -> None:
    # ADAPTED: mp_context is accepted and ignored; there is no pool of ours to
    # terminate on a deadlock (_fail_on_deadlock): a timeout fails the test.
    executor = Executor(redis_url, max_workers=2)
    res = executor.submit(func, *args)
    try:
        with pytest.raises(error):
            res.result(timeout=TIMEOUT)
    except futures.TimeoutError:
        pytest.fail("Executor deadlock")
    executor.shutdown(wait=True)


def test_error_at_task_pickle(redis_url: str, node: Any) -> None:
    # Check problem occurring while pickling a task in the task_handler thread
    _check_error(redis_url, PicklingError, id, calls.ErrorAtPickle())


def test_exit_during_func_exec_on_worker(redis_url: str, node: Any) -> None:
    _check_error(redis_url, SystemExit, calls._exit)


def test_error_during_func_exec_on_worker(redis_url: str, node: Any) -> None:
    _check_error(redis_url, RuntimeError, calls._raise_error, RuntimeError)


def test_exit_during_result_pickle_on_worker(redis_url: str, node: Any) -> None:
    _check_error(redis_url, SystemExit, calls._return_instance, calls.ExitAtPickle)


def test_error_during_result_pickle_on_worker(redis_url: str, node: Any) -> None:
    _check_error(redis_url, PicklingError, calls._return_instance, calls.ErrorAtPickle)


def test_shutdown_deadlock_pickle(redis_url: str, node: Any) -> None:
    # Test that the pool calling shutdown with wait=False does not cause
    # a deadlock if a task fails at pickle after the shutdown call.
    with Executor(redis_url, max_workers=2) as executor:
        executor.submit(id, 42).result()
        # ADAPTED: no executor manager thread of ours to join afterwards.
        f = executor.submit(id, calls.ErrorAtPickle())
        executor.shutdown(wait=False)
        with pytest.raises(PicklingError):
            f.result()
