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
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from producer.stream import StreamJob
from taskfan.fields import MAX_COUNT

if TYPE_CHECKING:
    from producer.client import Client

_END = object()


def check_buffersize(buffersize: object) -> None:
    """Python 3.14's checks, with its errors."""
    if buffersize is not None and not isinstance(buffersize, int):
        raise TypeError("buffersize must be an integer or None")
    if buffersize is not None and buffersize < 1:
        raise ValueError("buffersize must be None or > 0")


class Gate:
    """Calls handed by the consumer's thread to the enqueuer thread, which
    iterates this (blocking) until ``close``. ``shut`` (the executor shut down)
    closes it for good: the next call the consumer would send raises
    RuntimeError, as 3.14's ``submit`` does after shutdown."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self.shut_down = False

    def put(self, args: Any) -> None:
        with self._lock:
            if self.shut_down:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if not self._closed:
                self._queue.put(args)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_END)

    def shut(self) -> None:
        """No call is sent from now on; the job is sealed with those sent."""
        with self._lock:
            self.shut_down = True
        self.close()

    def __iter__(self) -> Iterator[Any]:
        while (args := self._queue.get()) is not _END:
            yield args


class BufferedMap:
    """One ``map(..., buffersize=N)``: its job, and ``values``, the results of
    ``fn`` over ``zip(*iterables)`` in order, at most ``buffersize`` calls sent
    ahead of the consumer (``options`` go to ``client.map``); raises TaskFailed
    at the first failed call. The executor keeps only ``gate`` (its ``shutdown``
    shuts it) and the job's id: a map dropped unread still cancels its job."""

    def __init__(
        self,
        client: Client,
        fn: Callable[..., Any],
        iterables: tuple[Iterable[Any], ...],
        timeout: float | None,
        buffersize: int,
        **options: Any,
    ) -> None:
        self.gate = gate = Gate()
        # No more calls can be in flight than a stream's longest window: a larger
        # buffersize (3.14 takes any) is the same as that one.
        buffersize = min(buffersize, MAX_COUNT - 1)
        job = client.map(
            fn, gate, star=True, stream=True, batch_size=1, window=buffersize + 1, **options
        )
        assert isinstance(job, StreamJob)
        self.job: StreamJob = job
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
        self.values = _gated(results, args_iter, gate)


def _gated(
    results: Generator[Any, None, None], args_iter: Iterator[Any], gate: Gate
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
