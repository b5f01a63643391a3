"""What runs inside a pool process: call the function on each item of a chunk.

Touches no Redis, so it can be tested alone. Each item's exception is caught
here and returned as data (type, message, traceback text, and the exception
itself where the codec carries it), so one failing item never fails the chunk.
Retries (with exponential backoff and jitter) and the soft timeout (SIGALRM
raising TimeoutError inside the task) happen here too. The chunk's outcomes are
encoded here, with the job's codec, so that a value the codec cannot carry
becomes an error for that item instead of breaking the chunk. So does a result
over the node's ``max_item_bytes`` (``ResultTooLarge``), and the function must
come from a module in the node's allowlist, checked before it is imported.
"""

from __future__ import annotations

import random
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from taskfan.codec import Codec, get_codec
from taskfan.errors import EncodeError, FunctionReferenceError
from taskfan.limits import format_size
from taskfan.protocol import DEFAULT_OPTIONS, CallMode, TaskOptions, call
from taskfan.refs import resolve
from worker.lifeline import FORKSERVER_PID, NODE_PID, die_with_parent

_functions: dict[tuple[str, tuple[str, ...]], Callable[..., Any]] = {}
#: characters of an error's message and traceback kept when its entry is too large
TRUNCATE_TO = 4096


class ChunkResult(NamedTuple):
    blob: bytes  #: the codec's encoding of [values, errors, attempts]
    failed: int  #: how many items failed
    seconds: float  #: time spent calling the function


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


def _function(ref: str, allow: tuple[str, ...]) -> Callable[..., Any]:
    fn = _functions.get((ref, allow))
    if fn is None:
        fn = _functions[ref, allow] = resolve(ref, allow)
    return fn


def _error(offset: int, exc: BaseException, codec: Codec, item: Any) -> list[Any]:
    """An error entry; it keeps the item's input, so that the item can be retried."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    carried: BaseException | None = None
    if codec.carries_exceptions:
        try:
            codec.dumps(exc)
            carried = exc.with_traceback(None)
        except EncodeError:
            carried = None
    return [offset, type(exc).__qualname__, str(exc), tb, carried, item]


def _retryable(exc: BaseException, options: TaskOptions) -> bool:
    if not options.retry_on:
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    names |= {f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__}
    return any(name in names for name in options.retry_on)


def backoff_delay(attempt: int, options: TaskOptions) -> float:
    """Seconds to wait before attempt ``attempt + 1``: exponential, full jitter."""
    ceiling = min(options.backoff_max, options.backoff * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def _on_alarm(signum: int, frame: Any) -> None:
    raise SoftTimeout("the item ran past its soft timeout")


def _call_with_options(
    fn: Callable[..., Any], mode: CallMode, item: Any, options: TaskOptions
) -> tuple[Any, int]:
    """Call once, or more with retries; returns (value, attempts) or raises the last error."""
    attempt = 0
    while True:
        attempt += 1
        if options.timeout:
            signal.setitimer(signal.ITIMER_REAL, options.timeout)
        try:
            return call(fn, mode, item), attempt
        except Exception as exc:
            if attempt > options.retries or not _retryable(exc, options):
                raise _Attempts(exc, attempt) from exc
        finally:
            if options.timeout:
                signal.setitimer(signal.ITIMER_REAL, 0)
        time.sleep(backoff_delay(attempt, options))


class _Attempts(Exception):
    def __init__(self, error: Exception, attempts: int) -> None:
        self.error = error
        self.attempts = attempts


def run_chunk(
    fn_ref: str,
    codec_name: str,
    mode: str,
    items: Sequence[Any],
    options: TaskOptions = DEFAULT_OPTIONS,
    allow: tuple[str, ...] = (),
    max_result_bytes: int | None = None,
) -> ChunkResult:
    """Call ``fn_ref`` on every item; never raises for an item's failure.

    ``allow``: module prefixes ``fn_ref`` must come from (empty: any).
    ``max_result_bytes``: an item whose encoded result (or error) is larger fails
    with ResultTooLarge.
    """
    codec = get_codec(codec_name)
    call_mode = CallMode(mode)
    values: list[Any] = []
    errors: list[list[Any]] = []
    attempts: list[list[int]] = []
    started = time.perf_counter()
    try:
        fn = _function(fn_ref, tuple(allow))
    except FunctionReferenceError as exc:
        errors = [_error(i, exc, codec, item) for i, item in enumerate(items)]
        return ChunkResult(codec.dumps([[None] * len(items), errors, []]), len(items), 0.0)
    append = values.append
    if options.is_default:  # the hot path: no timer, no retries
        for offset, item in enumerate(items):
            try:
                append(call(fn, call_mode, item))
            except Exception as exc:
                append(None)
                errors.append(_error(offset, exc, codec, item))
    else:
        if options.timeout:
            signal.signal(signal.SIGALRM, _on_alarm)
        for offset, item in enumerate(items):
            try:
                value, tries = _call_with_options(fn, call_mode, item, options)
                append(value)
            except _Attempts as failure:
                append(None)
                errors.append(_error(offset, failure.error, codec, item))
                tries = failure.attempts
            if tries > 1:
                attempts.append([offset, tries])
    seconds = time.perf_counter() - started
    try:
        blob = codec.dumps([values, errors, attempts])
    except EncodeError:
        blob = _encode_each(values, errors, attempts, codec)  # appends to errors
    if max_result_bytes is not None and len(blob) > max_result_bytes:
        blob = _limit_each(values, errors, attempts, codec, max_result_bytes)
    return ChunkResult(blob, len(errors), seconds)


def _encode_each(
    values: list[Any], errors: list[list[Any]], attempts: list[list[int]], codec: Codec
) -> bytes:
    """Encode item by item, turning each value the codec can't carry into an error."""
    failed = {error[0] for error in errors}
    for offset, value in enumerate(values):
        if offset in failed:
            continue
        try:
            codec.dumps(value)
        except EncodeError as exc:
            values[offset] = None
            message = f"the result cannot be encoded with the {codec.name} codec: {exc}"
            errors.append([offset, "EncodeError", message, "", None])
    errors.sort(key=lambda error: error[0])
    return codec.dumps([values, errors, attempts])


def _limit_each(
    values: list[Any], errors: list[list[Any]], attempts: list[list[int]], codec: Codec, limit: int
) -> bytes:
    """Turn each result over ``limit`` bytes into a ResultTooLarge error, and shrink
    each error over it (no exception object, then shorter texts, then no input)."""
    failed = {error[0] for error in errors}
    for offset, value in enumerate(values):
        if offset in failed:
            continue
        size = len(codec.dumps(value))
        if size > limit:
            values[offset] = None
            message = (
                f"the result encodes to {format_size(size)} with the {codec.name} codec, over "
                f"the node's max_item_bytes ({format_size(limit)}): return large data by "
                "reference (write it somewhere, return its path or URL)"
            )
            errors.append([offset, "ResultTooLarge", message, "", None])
    for error in errors:
        if len(codec.dumps(error)) <= limit:
            continue
        error[4] = None
        error[2] = _truncate(error[2])
        error[3] = _truncate(error[3])
        if len(codec.dumps(error)) > limit:
            del error[5:]  # the kept input: the item can no longer be retried
    errors.sort(key=lambda error: error[0])
    return codec.dumps([values, errors, attempts])


def _truncate(text: str) -> str:
    if len(text) <= TRUNCATE_TO:
        return text
    half = TRUNCATE_TO // 2
    return f"{text[:half]}\n... [{len(text) - TRUNCATE_TO} characters cut] ...\n{text[-half:]}"
