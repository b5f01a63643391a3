"""What runs inside a pool process: call the function on each item of a chunk.

Touches no Redis, so it can be tested alone. Each item's exception is caught
here and returned as data (type, message, traceback text, and the exception
itself where the codec carries it), so one failing item never fails the chunk.
The chunk's outcomes are encoded here, with the job's codec, so that a value the
codec cannot carry becomes an error for that item instead of breaking the chunk.
"""

from __future__ import annotations

import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from taskfan.codec import Codec, get_codec
from taskfan.errors import EncodeError, FunctionReferenceError
from taskfan.protocol import CallMode, call
from taskfan.refs import resolve
from worker.lifeline import die_with_parent

_functions: dict[str, Callable[..., Any]] = {}


class ChunkResult(NamedTuple):
    blob: bytes  #: the codec's encoding of [values, errors]
    failed: int  #: how many items failed
    seconds: float  #: time spent calling the function


def init_child(paths: Sequence[str]) -> None:
    """Pool initializer: die with the node, let the node alone handle Ctrl-C,
    and find task modules."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)


def _function(ref: str) -> Callable[..., Any]:
    fn = _functions.get(ref)
    if fn is None:
        fn = _functions[ref] = resolve(ref)
    return fn


def _error(offset: int, exc: BaseException, codec: Codec) -> list[Any]:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    carried: BaseException | None = None
    if codec.carries_exceptions:
        try:
            codec.dumps(exc)
            carried = exc.with_traceback(None)
        except EncodeError:
            carried = None
    return [offset, type(exc).__qualname__, str(exc), tb, carried]


def run_chunk(fn_ref: str, codec_name: str, mode: str, items: Sequence[Any]) -> ChunkResult:
    """Call ``fn_ref`` on every item; never raises for an item's failure."""
    codec = get_codec(codec_name)
    call_mode = CallMode(mode)
    values: list[Any] = []
    errors: list[list[Any]] = []
    started = time.perf_counter()
    try:
        fn = _function(fn_ref)
    except FunctionReferenceError as exc:
        errors = [_error(i, exc, codec) for i in range(len(items))]
        return ChunkResult(codec.dumps([[None] * len(items), errors]), len(items), 0.0)
    append = values.append
    for offset, item in enumerate(items):
        try:
            append(call(fn, call_mode, item))
        except Exception as exc:
            append(None)
            errors.append(_error(offset, exc, codec))
    seconds = time.perf_counter() - started
    try:
        blob = codec.dumps([values, errors])
    except EncodeError:
        blob = _encode_each(values, errors, codec)  # appends to errors
    return ChunkResult(blob, len(errors), seconds)


def _encode_each(values: list[Any], errors: list[list[Any]], codec: Codec) -> bytes:
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
    return codec.dumps([values, errors])
