"""``Executor.map(..., buffersize=N)``: Python 3.14's bounded map, on every Python.

With ``buffersize``, the map submits the first N calls, and one more each time
the consumer takes a result: the input is read lazily, in the consumer's
thread, never more than N calls ahead of it, so a map over an endless
generator streams. Validation, order, timeout and cancellation are
``concurrent.futures.Executor.map``'s of Python 3.14 (Lib/concurrent/futures/
_base.py): TypeError "buffersize must be an integer or None", ValueError
"buffersize must be None or > 0"; a dropped or failed iterator cancels the
calls still pending.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def check_buffersize(buffersize: object) -> None:
    """Python 3.14's checks, with its errors."""
    if buffersize is not None and not isinstance(buffersize, int):
        raise TypeError("buffersize must be an integer or None")
    if buffersize is not None and buffersize < 1:
        raise ValueError("buffersize must be None or > 0")


def buffered_map(
    executor: concurrent.futures.Executor,
    fn: Callable[..., Any],
    iterables: tuple[Iterable[Any], ...],
    timeout: float | None,
    buffersize: int,
) -> Iterator[Any]:
    """The results of ``fn`` over ``zip(*iterables)`` in order, at most
    ``buffersize`` calls submitted ahead of the consumer."""
    end_time = None if timeout is None else time.monotonic() + timeout
    args_iter = zip(*iterables, strict=False)
    futures = collections.deque(
        executor.submit(fn, *args) for args in itertools.islice(args_iter, buffersize)
    )
    executor_ref = weakref.ref(executor)

    def result_iterator() -> Iterator[Any]:
        try:
            futures.reverse()  # oldest on the right: pop() takes it
            while futures:
                if (ex := executor_ref()) is not None and (args := next(args_iter, None)):
                    futures.appendleft(ex.submit(fn, *args))
                # Careful not to keep a reference to the popped future
                if end_time is None:
                    yield _result_or_cancel(futures.pop())
                else:
                    yield _result_or_cancel(futures.pop(), end_time - time.monotonic())
        finally:
            for future in futures:
                future.cancel()

    return result_iterator()


def _result_or_cancel(future: concurrent.futures.Future[Any], timeout: float | None = None) -> Any:
    try:
        try:
            return future.result(timeout)
        finally:
            future.cancel()
    finally:
        del future  # break the reference cycle through the raised exception
