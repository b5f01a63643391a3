"""CPython's ``AsCompletedTests`` (``test_as_completed.py``), on a node."""

from __future__ import annotations

import itertools
import time
import weakref
from concurrent import futures
from concurrent.futures import Future
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, FINISHED
from typing import Any

import pytest

from producer import Executor
from tests.stdlib_futures import calls
from tests.stdlib_futures.conftest import (
    CANCELLED_AND_NOTIFIED_FUTURE,
    EXCEPTION_FUTURE,
    PENDING_FUTURE,
    RUNNING_FUTURE,
    SUCCESSFUL_FUTURE,
    create_future,
)


def test_no_timeout(executor: Executor) -> None:
    future1 = executor.submit(calls.mul, 2, 21)
    future2 = executor.submit(calls.mul, 7, 6)
    completed = set(
        futures.as_completed(
            [CANCELLED_AND_NOTIFIED_FUTURE, EXCEPTION_FUTURE, SUCCESSFUL_FUTURE, future1, future2]
        )
    )
    assert completed == {
        CANCELLED_AND_NOTIFIED_FUTURE,
        EXCEPTION_FUTURE,
        SUCCESSFUL_FUTURE,
        future1,
        future2,
    }


@pytest.mark.parametrize("timeout", [0, 0.100])
def test_future_times_out(executor: Executor, timeout: float) -> None:
    """``futures.as_completed`` timing out before completing its final future."""
    already_completed = {CANCELLED_AND_NOTIFIED_FUTURE, EXCEPTION_FUTURE, SUCCESSFUL_FUTURE}
    short_timeout = 0.100
    completed_futures = set()
    future = executor.submit(time.sleep, short_timeout * 10)
    try:
        for f in futures.as_completed(already_completed | {future}, timeout):
            completed_futures.add(f)
    except futures.TimeoutError:
        pass
    # Check that ``future`` wasn't completed.
    assert completed_futures == already_completed


def test_duplicate_futures(executor: Executor) -> None:
    # Issue 20367. Duplicate futures should not raise exceptions or give
    # duplicate responses.
    future1 = executor.submit(time.sleep, 2)
    completed = list(futures.as_completed(itertools.repeat(future1, 3)))
    assert len(completed) == 1


def test_free_reference_yielded_future() -> None:
    # Issue #14406: Generator should not keep references to finished futures.
    futures_list: list[Future[Any]] = [Future() for _ in range(8)]
    futures_list.append(create_future(state=CANCELLED_AND_NOTIFIED))
    futures_list.append(create_future(state=FINISHED, result=42))

    with pytest.raises(futures.TimeoutError):
        for future in futures.as_completed(futures_list, timeout=0):
            futures_list.remove(future)
            wr = weakref.ref(future)
            del future
            assert wr() is None

    futures_list[0].set_result("test")
    for future in futures.as_completed(futures_list):
        futures_list.remove(future)
        wr = weakref.ref(future)
        del future
        assert wr() is None
        if futures_list:
            futures_list[0].set_result("test")


def test_correct_timeout_exception_msg() -> None:
    futures_list = [
        CANCELLED_AND_NOTIFIED_FUTURE,
        PENDING_FUTURE,
        RUNNING_FUTURE,
        SUCCESSFUL_FUTURE,
    ]
    with pytest.raises(futures.TimeoutError) as cm:
        list(futures.as_completed(futures_list, timeout=0))
    assert str(cm.value) == "2 (of 4) futures unfinished"
