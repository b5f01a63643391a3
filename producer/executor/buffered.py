"""``Executor.map(..., buffersize=N)``: Python 3.14's bounded map, on every Python.

With ``buffersize``, the map sends the first N calls, and one more each time
the consumer asks for a result: the input is read lazily, in the consumer's
thread, never more than N calls ahead of it, so a map over an endless
generator streams. Validation, order, timeout and cancellation are
``concurrent.futures.Executor.map``'s of Python 3.14 (Lib/concurrent/futures/
_base.py): TypeError "buffersize must be an integer or None", ValueError
"buffersize must be None or > 0"; a dropped or failed iterator cancels the
calls still pending.

The calls go out as a streaming job of their own (``producer.stream``, one
call per batch): the consumer's thread hands each call to the job's enqueuer
thread through a gate, and each result read is freed in Redis, so an endless
map runs in flat memory there too.
"""

from __future__ import annotations

import itertools
import queue
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from producer.stream import StreamJob

if TYPE_CHECKING:
    from producer.client import Client

_END = object()


def check_buffersize(buffersize: object) -> None:
    """Python 3.14's checks, with its errors."""
    if buffersize is not None and not isinstance(buffersize, int):
        raise TypeError("buffersize must be an integer or None")
    if buffersize is not None and buffersize < 1:
        raise ValueError("buffersize must be None or > 0")


class _Gate:
    """Calls handed by the consumer's thread to the enqueuer thread, which
    iterates this (blocking) until ``close``."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def put(self, args: Any) -> None:
        self._queue.put(args)

    def close(self) -> None:
        self._queue.put(_END)

    def __iter__(self) -> Iterator[Any]:
        while (args := self._queue.get()) is not _END:
            yield args


def buffered_map(
    client: Client,
    fn: Callable[..., Any],
    iterables: tuple[Iterable[Any], ...],
    timeout: float | None,
    buffersize: int,
    **options: Any,
) -> Generator[Any, None, None]:
    """The results of ``fn`` over ``zip(*iterables)`` in order, at most
    ``buffersize`` calls sent ahead of the consumer; ``options`` go to
    ``client.map``. Raises TaskFailed at the first failed call."""
    gate = _Gate()
    job = client.map(
        fn, gate, star=True, stream=True, batch_size=1, window=buffersize + 1, **options
    )
    assert isinstance(job, StreamJob)
    results = job.results(timeout=timeout)
    args_iter: Iterator[Any] = zip(*iterables, strict=False)
    try:
        taken = 0
        for args in itertools.islice(args_iter, buffersize):
            gate.put(args)
            taken += 1
    except BaseException:
        gate.close()
        results.close()  # cancels the job, stops its thread
        raise
    if taken < buffersize:
        gate.close()
        args_iter = iter(())
    return _gated(results, args_iter, gate)


def _gated(
    results: Generator[Any, None, None], args_iter: Iterator[Any], gate: _Gate
) -> Generator[Any, None, None]:
    """Per result asked for: one more call sent first (3.14's order)."""
    ended = False
    try:
        while True:
            if not ended:
                args = next(args_iter, _END)
                if args is _END:
                    ended = True
                    gate.close()
                else:
                    gate.put(args)
            try:
                value = next(results)
            except StopIteration:
                return
            yield value
    finally:
        if not ended:
            gate.close()
        results.close()  # a job not read to its end is cancelled
