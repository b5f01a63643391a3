"""Fixtures of the ported tests: CPython's ``BaseTestCase`` and its futures in
every state (``test_concurrent_futures/util.py``)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Executor
from taskfan import keys
from tests.conftest import StartWorker
from tests.stdlib_futures.calls import FileEvent

#: the stdlib's pools have 5 workers; our node has 2 processes
WORKER_COUNT = 2


def create_future(
    state: str = PENDING, exception: BaseException | None = None, result: Any = None
) -> Future[Any]:
    f: Future[Any] = Future()
    f._state = state
    f._exception = exception
    f._result = result
    return f


PENDING_FUTURE = create_future(state=PENDING)
RUNNING_FUTURE = create_future(state=RUNNING)
CANCELLED_FUTURE = create_future(state=CANCELLED)
CANCELLED_AND_NOTIFIED_FUTURE = create_future(state=CANCELLED_AND_NOTIFIED)
EXCEPTION_FUTURE = create_future(state=FINISHED, exception=OSError())
SUCCESSFUL_FUTURE = create_future(state=FINISHED, result=42)


@pytest.fixture
def node(start_worker: StartWorker, r: redis.Redis) -> Any:
    # ADAPTED: the stdlib's pool starts its processes itself, before its first
    # call runs; ours are a node's, started here and awaited until it serves.
    worker = start_worker(processes=WORKER_COUNT)
    deadline = time.monotonic() + 60
    while not r.zcard(keys.NODES):
        assert worker.proc.poll() is None, worker.log()
        assert time.monotonic() < deadline, "the node did not start"
        time.sleep(0.05)
    return worker


@pytest.fixture
def executor(redis_url: str, node: Any) -> Iterator[Executor]:
    """``BaseTestCase.setUp``/``tearDown``: an executor, shut down with wait after."""
    executor = Executor(redis_url, max_workers=WORKER_COUNT)
    yield executor
    executor.shutdown(wait=True)


@pytest.fixture
def create_event(tmp_path: Path) -> Callable[[], FileEvent]:
    """``ProcessPoolMixin.create_event``, as a file (see ``calls.FileEvent``)."""
    counter = itertools.count()
    return lambda: FileEvent(str(tmp_path / f"event-{next(counter)}"))
