"""How a pool process encodes the outcomes of the items it settled.

One ``Part`` per run of items that follow each other in their batch: a chunk
whose every item settled is one Part; a chunk of which some items wait for a
retry (``worker.child.Retry``) is cut around them, and each retry's outcome
later fills its gap with a Part of its own. The node frames the parts of a
batch, in offset order, into its result entry (``taskfan.outcomes``) without
decoding them.

A value the codec cannot carry becomes that item's ``EncodeError``, a result
over ``max_item_bytes`` its ``ResultTooLarge``, and an error over it is cut
down, so one item never breaks its chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from taskfan.boundary import brief
from taskfan.codec import Codec
from taskfan.errors import EncodeError
from taskfan.limits import format_size

#: characters of an error's message and traceback kept when its entry is too large
TRUNCATE_TO = 4096


class Part(NamedTuple):
    """The outcomes of items that follow each other in their batch."""

    offset: int  #: of its first item, in the batch
    size: int  #: items
    failed: int  #: how many of its items failed
    blob: bytes  #: the codec's encoding of [values, errors, attempts]


def encode_parts(
    values: list[Any],
    errors: list[list[Any]],
    offsets: Sequence[int],
    attempts: Sequence[int],
    codec: Codec,
    max_result_bytes: int | None,
) -> tuple[Part, ...]:
    """The Parts of settled items: ``values[i]`` is the item at batch offset
    ``offsets[i]`` (ascending), ``errors`` name their item by its index in
    ``values``, ``attempts[i]`` is how many times item i ran (empty: once each)."""
    parts = []
    for lo, hi in _runs(offsets):
        run_errors = [[e[0] - lo, *e[1:]] for e in errors if lo <= e[0] < hi]
        run_attempts = [
            [i - lo, attempts[i]] for i in range(lo, hi) if attempts and attempts[i] > 1
        ]
        blob, failed = encode(values[lo:hi], run_errors, run_attempts, codec, max_result_bytes)
        parts.append(Part(offsets[lo], hi - lo, failed, blob))
    return tuple(parts)


def _runs(offsets: Sequence[int]) -> list[tuple[int, int]]:
    """The index ranges [lo, hi) of ``offsets`` whose offsets follow each other."""
    runs = []
    lo = 0
    for i in range(1, len(offsets) + 1):
        if i == len(offsets) or offsets[i] != offsets[i - 1] + 1:
            runs.append((lo, i))
            lo = i
    return runs


def encode(
    values: list[Any],
    errors: list[list[Any]],
    attempts: list[list[int]],
    codec: Codec,
    max_result_bytes: int | None,
) -> tuple[bytes, int]:
    """The blob of [values, errors, attempts], and how many items failed in it."""
    try:
        blob = _dumps(codec, [values, errors, attempts])
    except EncodeError:
        blob = _encode_each(values, errors, attempts, codec)  # appends to errors
    if max_result_bytes is not None and len(blob) > max_result_bytes:
        blob = _limit_each(values, errors, attempts, codec, max_result_bytes)
    return blob, len(errors)


def _dumps(codec: Codec, value: Any) -> bytes:
    """The codec's encoding; EncodeError for whatever encoding the value raised
    (its ``__reduce__`` is the user's code: SystemExit, KeyboardInterrupt, ...)."""
    try:
        return codec.dumps(value)
    except EncodeError:
        raise
    except BaseException as exc:  # the codec lets KeyboardInterrupt through; here it is data
        raise EncodeError(f"cannot encode {type(value).__name__}: {brief(exc)}") from exc


def _encode_each(
    values: list[Any], errors: list[list[Any]], attempts: list[list[int]], codec: Codec
) -> bytes:
    """Encode item by item, turning each value the codec can't carry into an error,
    and keeping of each error only what the codec can carry."""
    failed = {error[0] for error in errors}
    for error in errors:
        _encodable_error(error, codec)
    for offset, value in enumerate(values):
        if offset in failed:
            continue
        try:
            _dumps(codec, value)
        except EncodeError as exc:
            values[offset] = None
            message = f"the result cannot be encoded with the {codec.name} codec: {exc}"
            errors.append([offset, "EncodeError", message, "", None])
    errors.sort(key=lambda error: error[0])
    return _dumps(codec, [values, errors, attempts])


def _encodable_error(error: list[Any], codec: Codec) -> None:
    """Drop from an error entry what the codec cannot carry: the exception object
    (checked in the child already), then the kept input (the item can then no
    longer be retried)."""
    for drop in (4, 5):
        try:
            _dumps(codec, error)
            return
        except EncodeError:
            if drop == 4:
                error[4] = None
            else:
                del error[5:]


def _limit_each(
    values: list[Any], errors: list[list[Any]], attempts: list[list[int]], codec: Codec, limit: int
) -> bytes:
    """Turn each result over ``limit`` bytes into a ResultTooLarge error, and shrink
    each error over it (no exception object, then shorter texts, then no input)."""
    failed = {error[0] for error in errors}
    for offset, value in enumerate(values):
        if offset in failed:
            continue
        size = len(_dumps(codec, value))
        if size > limit:
            values[offset] = None
            message = (
                f"the result encodes to {format_size(size)} with the {codec.name} codec, over "
                f"the node's max_item_bytes ({format_size(limit)}): return large data by "
                "reference (write it somewhere, return its path or URL)"
            )
            errors.append([offset, "ResultTooLarge", message, "", None])
    for error in errors:
        if len(_dumps(codec, error)) <= limit:
            continue
        error[4] = None
        error[2] = _truncate(error[2])
        error[3] = _truncate(error[3])
        if len(_dumps(codec, error)) > limit:
            del error[5:]  # the kept input: the item can no longer be retried
    errors.sort(key=lambda error: error[0])
    return _dumps(codec, [values, errors, attempts])


def _truncate(text: str) -> str:
    if len(text) <= TRUNCATE_TO:
        return text
    half = TRUNCATE_TO // 2
    return f"{text[:half]}\n... [{len(text) - TRUNCATE_TO} characters cut] ...\n{text[-half:]}"
