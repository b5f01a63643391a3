"""What runs inside a pool process: call the function on each item of a chunk.

Touches no Redis, so it can be tested alone. Each item's exception is caught
here and returned as data (type, message, traceback text, and the exception
itself where the codec carries it), so one failing item never fails the chunk.
The soft timeout (SIGALRM raising TimeoutError inside the task) happens here
too, per attempt. An item that raised and may be tried again (``retries`` left,
its type in ``retry_on``) is not waited for here: it comes back as a ``Retry``
(which attempt, after how long) and the child goes on with the rest of its
chunk; the node holds the delay (``worker.core.retries``) and sends the item again.

The outcomes of the items settled are encoded here, with the job's codec, one
``Part`` per run of items that follow each other in their batch, so that a value
the codec cannot carry becomes an error for that item instead of breaking the
chunk. So does a result over the node's ``max_item_bytes`` (``ResultTooLarge``),
and the function must come from a module in the node's allowlist, checked before
it is imported.
"""

from __future__ import annotations

import gc
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from taskfan.boundary import Failure, describe, message, type_name
from taskfan.bounds import MAX_BACKOFF, MAX_TIMEOUT, capped
from taskfan.callables import VALUE, bind, load_by_value
from taskfan.codec import Codec, get_codec
from taskfan.errors import BoundStateError
from taskfan.lifeline import FORKSERVER_PID, NODE_PID, die_with_parent
from taskfan.options import DEFAULT_OPTIONS, CallMode, TaskOptions, call
from taskfan.refs import resolve
from worker.pool.outcome_parts import Part, encode, encode_parts
from worker.pool.process_setup import initialized, initializer_error
from worker.pool.sending import Unsendable, unpack

_functions: dict[tuple[str, tuple[str, ...]], Callable[..., Any]] = {}
#: callables with bound state (or sent by value) built lately, newest last
_bound: dict[tuple[str, tuple[str, ...], str, bytes], Callable[..., Any]] = {}
#: how many of them a pool process keeps (each may hold a large bound object)
MAX_BOUND = 4


class Retry(NamedTuple):
    """An item that raised and is to be tried again, after ``delay`` seconds."""

    offset: int  #: in the batch
    attempt: int  #: the attempt to make (2 for the first retry)
    delay: float


class Escaped(NamedTuple):
    """An item that raised a BaseException that is not an Exception (SystemExit,
    KeyboardInterrupt, ...): recorded as its failure like any other, and named to
    the node, which logs it (it would have ended a process that let it through)."""

    offset: int  #: in the batch
    type: str
    message: str


class ChunkResult(NamedTuple):
    parts: tuple[Part, ...]  #: the outcomes of the items settled, in batch order
    seconds: float  #: time spent calling the function
    retries: tuple[Retry, ...] = ()  #: the items not settled yet
    escaped: tuple[Escaped, ...] = ()  #: items that raised a BaseException, not an Exception
    #: why this process could not import (or may not run) the function; the
    #: parts then fail every item with that error, and the node may hand the
    #: batch to a node that can run it instead (``worker.core.unrunnable``)
    unrunnable: tuple[str, str] | None = None

    @property
    def failed(self) -> int:
        """How many items failed (for good)."""
        return sum(part.failed for part in self.parts)


class SoftTimeout(TimeoutError):
    """Raised inside a task that ran past its job's ``timeout``."""


def init_child(paths: Sequence[str], via_forkserver: bool = False) -> None:
    """Pool initializer: die with the parent (the node, or its forkserver), let
    the node alone handle Ctrl-C, and find task modules."""
    die_with_parent(FORKSERVER_PID if via_forkserver else NODE_PID)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    freeze_start_up()


def freeze_start_up() -> None:
    """Leave the objects this process holds now (its modules: they live as long
    as it does) out of every later garbage collection (``gc.freeze``). Else the
    first chunk of many items starts the process's first full collection, which
    walks all of them: decoding 25,000 items took 12 ms instead of 2 ms, once in
    every new process (docs/performance.md, "The first (c) on a fresh node").

    No ``gc.collect()`` first, as the CPython docs advise for forked children:
    in a process forked from the node or its forkserver, a collection writes to
    every inherited object and copies its pages, 15 ms at each process start
    (each chunk, under ``max_tasks_per_child=1``); the freeze alone takes
    microseconds. What was garbage at the fork stays, for the process's life."""
    gc.freeze()


def _function(ref: str, allow: tuple[str, ...]) -> Callable[..., Any]:
    fn = _functions.get((ref, allow))
    if fn is None:
        fn = _functions[ref, allow] = resolve(ref, allow)
    return fn


def _callable(
    ref: str, allow: tuple[str, ...], wrap: str, bound: bytes, codec: Codec
) -> Callable[..., Any]:
    """The callable an entry names (``taskfan.callables``): the function resolved
    first (allowlist checked before any import), then its bound state decoded with
    the job's codec, which the node's guard accepted; by value, the function
    itself, which the guard let through. The last few are kept: the chunks of a
    batch share them."""
    if not wrap:
        return _function(ref, allow)
    key = (ref, allow, wrap, bound)
    fn = _bound.get(key)
    if fn is None:
        function = None if wrap == VALUE else _function(ref, allow)  # may be unrunnable here
        try:
            fn = (
                load_by_value(bound)
                if function is None
                else bind(function, wrap, codec.loads(bound))
            )
        except BoundStateError:
            raise
        except BaseException as exc:  # unpickling runs the state's own code
            raise BoundStateError(
                f"cannot load what {ref} is bound to ({wrap}): {type_name(exc)}: {message(exc)}"
            ) from None
        if len(_bound) >= MAX_BOUND:
            _bound.pop(next(iter(_bound)))
        _bound[key] = fn
    return fn


def _error(offset: int, exc: BaseException, codec: Codec, item: Any) -> list[Any]:
    """An error entry; it keeps the item's input, so that the item can be retried.

    The exception itself travels only when it survives a round trip through the
    codec here (an exception whose ``__init__`` takes two arguments pickles, and
    cannot be unpickled); its type, message and traceback always travel as text.
    """
    if isinstance(exc, _NotSent):
        failure = exc.failure
        text = f"the node could not send the item to its pool: {failure.message}"
        return [offset, failure.type, text, failure.traceback, None]
    failure = describe(exc)
    return [offset, failure.type, failure.message, failure.traceback, _carried(exc, codec), item]


def _carried(exc: BaseException, codec: Codec) -> BaseException | None:
    if not codec.carries_exceptions:
        return None
    try:
        exc = exc.with_traceback(None)
        back = codec.loads(codec.dumps(exc))
    except BaseException:  # its pickling or unpickling ran its own code
        return None
    return exc if type(back) is type(exc) else None


def _retryable(exc: BaseException, options: TaskOptions) -> bool:
    """Whether ``retry_on`` lets ``exc`` be retried: any Exception when it is empty;
    a BaseException that is not one (SystemExit, ...) only when it names it."""
    if isinstance(exc, _NotSent):
        return False  # it would not be sent the next time either
    if not options.retry_on:
        return isinstance(exc, Exception)
    names = {cls.__name__ for cls in type(exc).__mro__}
    names |= {f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__}
    return any(name in names for name in options.retry_on)


def backoff_delay(attempt: int, options: TaskOptions) -> float:
    """Seconds to wait before attempt ``attempt + 1``: exponential, full jitter."""
    # The exponent is capped: 2 ** 10**6 would not fit a float (OverflowError).
    ceiling = min(options.backoff_max, options.backoff * 2.0 ** min(attempt - 1, 64))
    return capped(random.uniform(ceiling / 2, ceiling), MAX_BACKOFF)


def _on_alarm(signum: int, frame: Any) -> None:
    raise SoftTimeout("the item ran past its soft timeout")


class _NotSent(Exception):
    """Raised in place of calling the task on an item the node could not send."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _call(fn: Callable[..., Any], mode: CallMode, item: Any) -> Any:
    if type(item) is Unsendable:
        raise _NotSent(item.failure)
    return call(fn, mode, item)


def _call_once(fn: Callable[..., Any], mode: CallMode, item: Any, options: TaskOptions) -> Any:
    """One attempt, under the soft timeout when the job has one."""
    if options.timeout:
        signal.setitimer(signal.ITIMER_REAL, capped(options.timeout, MAX_TIMEOUT))
    try:
        return _call(fn, mode, item)
    finally:
        if options.timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)


def run_chunk(
    fn_ref: str,
    codec_name: str,
    mode: str,
    items: Sequence[Any] | bytes,
    options: TaskOptions = DEFAULT_OPTIONS,
    allow: tuple[str, ...] = (),
    max_result_bytes: int | None = None,
    first: int = 0,
    retrying: Sequence[tuple[int, int]] | None = None,
    wrap: str = "",
    bound: bytes = b"",
    init: tuple[str, str, bytes] | None = None,
) -> ChunkResult:
    """Call ``fn_ref`` on every item; never raises for an item's failure.

    ``allow``: module prefixes ``fn_ref`` must come from (empty: any).
    ``max_result_bytes``: an item whose encoded result (or error) is larger fails
    with ResultTooLarge.
    ``first``: the offset in its batch of the first item (the items follow each
    other, on their first attempt); or ``retrying``: (offset in the batch,
    attempt to make) for each item, offsets ascending (a chunk of retries).
    ``wrap`` and ``bound``: how the callable is built from ``fn_ref``
    (``taskfan.callables``).
    ``init``: the job's id, initializer and encoded initargs, run first when
    this process has not run them yet (``worker.pool.process_setup``).
    """
    codec = get_codec(codec_name)
    call_mode = CallMode(mode)
    if isinstance(items, bytes):  # as the node sends them (worker.pool.sending)
        items = unpack(items)
    try:
        fn = _callable(fn_ref, tuple(allow), wrap, bound, codec)
    except BaseException as exc:  # FunctionReferenceError, what the module raised at import,
        # or what unpickling the bound state raised
        errors = [_error(i, exc, codec, item) for i, item in enumerate(items)]
        nothing = [None] * len(items)
        offsets, attempts = _places(first, len(items), retrying)
        # A function this process cannot import may run elsewhere (worker.core.unrunnable);
        # bound state that does not load is this job's alone: its items fail.
        cannot = None if isinstance(exc, BoundStateError) else (type_name(exc), message(exc))
        return ChunkResult(
            encode_parts(nothing, errors, offsets, attempts, codec, max_result_bytes),
            0.0,
            unrunnable=cannot,
        )
    if init is not None:
        failure = initialized(*init, codec, allow)
        if failure is not None:
            return _initializer_failed(
                init, failure, items, first, retrying, codec, max_result_bytes
            )
    if options.is_default and retrying is None:  # the hot path: no timer, no retries
        started = time.perf_counter()
        values: list[Any] = []
        errors = []
        escaped: list[Escaped] = []
        append = values.append
        for offset, item in enumerate(items):
            try:
                append(_call(fn, call_mode, item))
            except BaseException as exc:  # sys.exit() in a task fails its item, no more
                append(None)
                errors.append(_error(offset, exc, codec, item))
                if not isinstance(exc, Exception):
                    escaped.append(Escaped(first + offset, errors[-1][1], errors[-1][2]))
        seconds = time.perf_counter() - started
        blob, failed = encode(values, errors, [], codec, max_result_bytes)
        return ChunkResult((Part(first, len(items), failed, blob),), seconds, (), tuple(escaped))
    offsets, attempts = _places(first, len(items), retrying)
    return _run_with_options(
        fn, call_mode, items, options, codec, max_result_bytes, offsets, attempts
    )


def _initializer_failed(
    init: tuple[str, str, bytes],
    failure: Failure,
    items: Sequence[Any],
    first: int,
    retrying: Sequence[tuple[int, int]] | None,
    codec: Codec,
    max_result_bytes: int | None,
) -> ChunkResult:
    """Every item fails with the job's InitializerError, which carries the
    initializer's traceback; none is retried (it would fail the same way here)."""
    exc = initializer_error(init[0], init[1], failure)
    carried = _carried(exc, codec)
    text = message(exc)
    errors = [
        [i, type_name(exc), text, failure.traceback, carried, item] for i, item in enumerate(items)
    ]
    offsets, attempts = _places(first, len(items), retrying)
    nothing = [None] * len(items)
    return ChunkResult(
        encode_parts(nothing, errors, offsets, attempts, codec, max_result_bytes), 0.0
    )


def _places(
    first: int, count: int, retrying: Sequence[tuple[int, int]] | None
) -> tuple[Sequence[int], list[int]]:
    """Each item's offset in its batch, and the attempt it makes (empty: its first)."""
    if retrying is None:
        return range(first, first + count), []
    return [offset for offset, _ in retrying], [attempt for _, attempt in retrying]


def _run_with_options(
    fn: Callable[..., Any],
    call_mode: CallMode,
    items: Sequence[Any],
    options: TaskOptions,
    codec: Codec,
    max_result_bytes: int | None,
    offsets: Sequence[int],
    attempts: Sequence[int],
) -> ChunkResult:
    """Each item once (its attempt is ``attempts[i]``, empty: the first); one that
    raised and may be tried again becomes a Retry instead of an outcome.

    The delay is drawn once per attempt number per chunk: the items of a chunk
    that fail together come due together, and go back to the pool as one chunk.
    """
    started = time.perf_counter()
    if options.timeout:
        signal.signal(signal.SIGALRM, _on_alarm)
    values: list[Any] = []
    errors: list[list[Any]] = []
    settled: list[int] = []
    retries: list[Retry] = []
    escaped: list[Escaped] = []
    delays: dict[int, float] = {}
    for i, item in enumerate(items):
        attempt = attempts[i] if attempts else 1
        try:
            value = _call_once(fn, call_mode, item, options)
        except BaseException as exc:  # sys.exit() in a task fails its item, no more
            if attempt <= options.retries and _retryable(exc, options):
                if attempt not in delays:
                    delays[attempt] = backoff_delay(attempt, options)
                retries.append(Retry(offsets[i], attempt + 1, delays[attempt]))
                continue
            errors.append(_error(len(values), exc, codec, item))
            if not isinstance(exc, Exception):
                escaped.append(Escaped(offsets[i], errors[-1][1], errors[-1][2]))
            value = None
        values.append(value)
        settled.append(i)
    seconds = time.perf_counter() - started
    parts = encode_parts(
        values, errors, [offsets[i] for i in settled],
        [attempts[i] if attempts else 1 for i in settled], codec, max_result_bytes,
    )  # fmt: skip
    return ChunkResult(parts, seconds, tuple(retries), tuple(escaped))
