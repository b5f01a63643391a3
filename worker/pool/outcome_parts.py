"""How a pool process encodes the outcomes of the items it settled.

One ``Part`` per run of items that follow each other in their batch: a chunk
whose every item settled is one Part; a chunk of which some items wait for a
retry (``worker.pool.child.Retry``) is cut around them, and each retry's outcome
later fills its gap with a Part of its own. The node frames the parts of a
batch, in offset order, into its result entry (``taskfan.outcomes``) without
decoding them.

A value the codec cannot carry becomes that item's ``EncodeError``, a result
over ``max_item_bytes`` its ``ResultTooLarge``, and an error over it is cut
down, so one item never breaks its chunk. A chunk that names a class or function
a reader may not be able to import (anything outside the standard types and
taskfan's own: ``Codec.dumps_portable``) is encoded item by item, so that one
value a reader cannot decode never breaks its chunk's decoding either.
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
    """The blob of the outcomes, and how many items failed in it.

    The fast path: ``[values, errors, attempts]`` in one piece, when it encodes,
    fits, and is portable (any reader can decode it). Otherwise item by item
    (``_encode_each``).
    """
    known: bool | None
    try:
        blob, known = _dumps(codec, [values, errors, attempts])
    except EncodeError:
        blob, known = b"", None  # some item's value or error: which, item by item
    if known and (max_result_bytes is None or len(blob) <= max_result_bytes):
        return blob, len(errors)
    blob = _encode_each(values, errors, attempts, codec, max_result_bytes, known)
    return blob, len(errors)  # _encode_each appends to errors


def _dumps(codec: Codec, value: Any, portable: bool | None = None) -> tuple[bytes, bool]:
    """The codec's encoding and whether it is portable (given as ``portable``,
    when known: plain dumps cost less); EncodeError for whatever encoding the
    value raised (its ``__reduce__`` is the user's code)."""
    try:
        if portable is not None:
            return codec.dumps(value), portable
        return codec.dumps_portable(value)
    except EncodeError:
        raise
    except BaseException as exc:  # the codec lets KeyboardInterrupt through; here it is data
        raise EncodeError(f"cannot encode {type(value).__name__}: {brief(exc)}") from exc


def _cause(exc: EncodeError, codec: Codec) -> BaseException | None:
    """What encoding the value raised (a PicklingError, or the SystemExit of its
    ``__reduce__``), for the reader to raise as ``ProcessPoolExecutor`` does;
    None unless the codec carries it there and back."""
    cause = exc.__cause__
    if cause is None or not codec.carries_exceptions:
        return None
    try:
        cause = cause.with_traceback(None)
        back = codec.loads(codec.dumps(cause))
    except BaseException:  # its pickling ran its own code
        return None
    return cause if type(back) is type(cause) else None


def _encode_each(
    values: list[Any],
    errors: list[list[Any]],
    attempts: list[list[int]],
    codec: Codec,
    limit: int | None,
    portable: bool | None,
) -> bytes:
    """Encode item by item: a value the codec can't carry becomes its item's
    EncodeError, one over ``limit`` its ResultTooLarge, and each error keeps what
    the codec can carry within ``limit``.

    When every piece is portable the blob is ``[values, errors, attempts]`` as on
    the fast path. Otherwise it is ``[None, errors, attempts, pieces]``: each
    value encoded on its own (``pieces[i]``: its type's name and its encoding,
    None for a failed item), and each error's exception and input encoded on
    their own too, so that a reader that cannot decode one of them (its class
    is not importable there, or rebuilding it raises) loses that item only.
    ``portable``: whether the chunk as a whole was, when it could be encoded.
    """
    pieces: list[list[Any] | None] = [None] * len(values)
    known = portable
    portable = True
    failed = {error[0] for error in errors}
    for offset, value in enumerate(values):
        if offset in failed:
            continue
        try:
            piece, plain = _dumps(codec, value, known)
        except EncodeError as exc:
            message = f"the result cannot be encoded with the {codec.name} codec: {exc}"
            errors.append([offset, "EncodeError", message, "", _cause(exc, codec)])
            values[offset] = None
            continue
        if limit is not None and len(piece) > limit:
            errors.append(
                [offset, "ResultTooLarge", _too_large(len(piece), codec, limit), "", None]
            )
            values[offset] = None
            continue
        pieces[offset] = [_type_name(value), piece]
        portable = portable and plain
    errors.sort(key=lambda error: error[0])
    kept = [_error_pieces(error, codec) for error in errors]
    if portable and all(plain for _, plain in kept):
        for error in errors:
            _fit(error, codec, limit)
        return _dumps(codec, [values, errors, attempts])[0]
    errors = [pieced for pieced, _ in kept]
    for error in errors:
        _fit(error, codec, limit)
    return _dumps(codec, [None, errors, attempts, pieces])[0]


def _error_pieces(error: list[Any], codec: Codec) -> tuple[list[Any], bool]:
    """The error with its exception and input each encoded on their own (None
    where the codec cannot carry one: the input then is no longer kept), and
    whether both are portable. Drops from ``error`` itself what cannot be encoded."""
    pieced = error[:4]
    portable = True
    for slot in (4, 5):
        if slot >= len(error) or (slot == 4 and error[4] is None):
            pieced.append(None)
            continue
        try:
            piece, plain = _dumps(codec, error[slot])
        except EncodeError:
            piece, plain = None, True
            if slot == 4:
                error[4] = None
            else:
                del error[5:]
        pieced.append(piece)
        portable = portable and plain
    if pieced[5] is None:
        del pieced[5:]
    return pieced, portable


def _fit(error: list[Any], codec: Codec, limit: int | None) -> None:
    """Shrink an error over ``limit`` bytes: no exception object, then shorter
    texts, then no input (the item can then no longer be retried)."""
    if limit is None or len(_dumps(codec, error)[0]) <= limit:
        return
    error[4] = None
    error[2] = _truncate(error[2])
    error[3] = _truncate(error[3])
    if len(_dumps(codec, error)[0]) > limit:
        del error[5:]


def _too_large(size: int, codec: Codec, limit: int) -> str:
    return (
        f"the result encodes to {format_size(size)} with the {codec.name} codec, over "
        f"the node's max_item_bytes ({format_size(limit)}): return large data by "
        "reference (write it somewhere, return its path or URL)"
    )


def _type_name(value: Any) -> str:
    kind = type(value)
    return f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', '?')}"


def _truncate(text: str) -> str:
    if len(text) <= TRUNCATE_TO:
        return text
    half = TRUNCATE_TO // 2
    return f"{text[:half]}\n... [{len(text) - TRUNCATE_TO} characters cut] ...\n{text[-half:]}"
