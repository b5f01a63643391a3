"""Result entries: what a node records for a batch, and the outcomes in it.

A result entry is the value of one field of a job's results hash::

    b"TFR1" | start u64 | count u32 | failed u32 | chunks u32 | (length u32 | blob)*
    b"TFR2" | start u64 | count u32 | failed u32 | chunks u32 | offsets u32 * count
            | (length u32 | blob)*

``TFR1`` holds a whole batch: items ``start`` to ``start + count - 1``. ``TFR2``
holds a retry of some of a batch's items (``Job.retry_failed``): item ``i`` of the
entry is item ``start + offsets[i]`` of the job; it is recorded in the field
``"<batch>.<round>"`` and overlays the batch's earlier outcomes.

Each blob holds the outcomes of consecutive items (a chunk's, or the part of a
chunk around an item that was retried), encoded by the job's codec as
``[values, errors, attempts]``: ``values`` has one value per item (None where the
item failed); ``errors`` lists ``[offset, type, message, traceback, exception,
input...]`` per failed item, ``offset`` counted within the blob, ``exception``
the exception object where the codec carries one (pickle), else None, and an
optional last element the item's input, kept so the item can be retried;
``attempts`` lists ``[offset, attempts]`` for items that ran more than once.

A blob that names a class or function a reader may lack (anything but standard
types and taskfan's own; pickle only) is encoded item by item instead, as
``[None, errors, attempts, pieces]``: ``pieces[i]`` is ``[type name, encoding]``
of item i's value (None where it failed), and each error's exception and input
are encodings of their own. A piece that does not decode here (its class cannot
be imported, rebuilding it raises) makes that item an ``UnreadableResult``, and
an exception that does not decode leaves its error's text: one item never makes
its neighbours unreadable. Readers from before this layout refuse such a blob
with ProtocolError; older blobs read as they always did.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any

from taskfan.boundary import brief, describe, reraise_interrupt
from taskfan.codec import Codec
from taskfan.errors import ProtocolError, TaskFailed

_WHOLE, _PART = b"TFR1", b"TFR2"
#: the error type of an item whose result the reader cannot decode
UNREADABLE = "UnreadableResult"
_HEAD = struct.Struct("<QIII")
_U32 = struct.Struct("<I")


def encode_result(
    start: int, count: int, failed: int, blobs: list[bytes], offsets: Sequence[int] | None = None
) -> bytes:
    """A result entry; with ``offsets``, the retry of those items of a batch."""
    parts = [_WHOLE if offsets is None else _PART, _HEAD.pack(start, count, failed, len(blobs))]
    if offsets is not None:
        if len(offsets) != count:
            raise ValueError(f"{len(offsets)} offsets for {count} items")
        parts.append(struct.pack(f"<{count}I", *offsets))
    for blob in blobs:
        parts.append(_U32.pack(len(blob)))
        parts.append(blob)
    return b"".join(parts)


def failed_count(data: bytes) -> int:
    """How many items a result entry records as failed, read from its header alone."""
    if len(data) < 4 + _HEAD.size or data[:4] not in (_WHOLE, _PART):
        raise ProtocolError("not a taskfan result entry")
    return int(_HEAD.unpack_from(data, 4)[2])


@dataclass(frozen=True)
class ResultEntry:
    start: int
    count: int
    failed: int
    blobs: list[bytes]
    #: for a retry entry, the offsets (from ``start``) of its items
    offsets: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, data: bytes, where: str) -> ResultEntry:
        view = memoryview(data)
        pos = len(_WHOLE) + _HEAD.size
        magic = data[:4]
        if len(data) < pos or magic not in (_WHOLE, _PART):
            raise ProtocolError(f"{where}: not a taskfan result entry")
        start, count, failed, nblobs = _HEAD.unpack_from(view, 4)
        offsets = None
        if magic == _PART:
            if pos + 4 * count > len(data):
                raise ProtocolError(f"{where}: result entry is truncated")
            offsets = struct.unpack_from(f"<{count}I", view, pos)
            pos += 4 * count
        blobs: list[bytes] = []
        for _ in range(nblobs):
            if pos + _U32.size > len(data):
                raise ProtocolError(f"{where}: result entry is truncated")
            (size,) = _U32.unpack_from(view, pos)
            pos += _U32.size
            if pos + size > len(data):
                raise ProtocolError(f"{where}: result entry is truncated")
            blobs.append(bytes(view[pos : pos + size]))
            pos += size
        return cls(start, count, failed, blobs, offsets)


@dataclass(frozen=True)
class RemoteError:
    """What a node caught when an item raised."""

    type: str
    message: str
    traceback: str
    exception: BaseException | None = None
    #: ``(input,)`` when the item's input was kept for a retry, else None
    retry_input: tuple[Any] | None = None

    def to_task_failed(self, job_id: str, index: int) -> TaskFailed:
        return TaskFailed(job_id, index, self.type, self.message, self.traceback, self.exception)

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}


@dataclass(frozen=True)
class Outcome:
    """One item's outcome: its value, or the error it raised."""

    index: int
    ok: bool
    value: Any = None
    error: RemoteError | None = None
    #: how many times the item ran (more than 1 after retries or redelivery)
    attempts: int = 1
    #: its job was cancelled (or abandoned) before its outcome was recorded
    #: (``cancelled``): ``error`` is a CancelledError
    cancelled: bool = False


def cancelled(index: int, job_id: str, state: str = "cancelled") -> Outcome:
    """The outcome of an item of a job that ended ``state`` (cancelled or
    abandoned) with none recorded: never run, let go by a node, killed by a
    hard cancel, or finished after the cancel (unrecorded)."""
    message = f"job {job_id} was {state} before this item's outcome was recorded"
    error = RemoteError("CancelledError", message, "", CancelledError(message))
    return Outcome(index, False, error=error, cancelled=True)


def _decode(blob: bytes, codec: Codec, where: str) -> list[Any]:
    try:
        decoded = codec.loads(blob)
    except BaseException as exc:  # bad bytes, or what a value's own code raised
        reraise_interrupt(exc)
        raise ProtocolError(f"{where}: cannot decode a chunk of results: {brief(exc)}") from exc
    if (
        not isinstance(decoded, (list, tuple))
        or len(decoded) < 2
        or not isinstance(decoded[1], (list, tuple))
        or not (
            isinstance(decoded[0], (list, tuple))
            or (decoded[0] is None and len(decoded) >= 4 and isinstance(decoded[3], (list, tuple)))
        )
    ):
        raise ProtocolError(f"{where}: a chunk of results is not [values, errors, attempts]")
    return decoded if isinstance(decoded, list) else list(decoded)


def chunk_values(blob: bytes, codec: Codec, where: str) -> list[Any] | None:
    """The values of a chunk whose items all succeeded (the readers' fast path);
    None for a chunk encoded item by item, which ``iter_outcomes`` reads."""
    values = _decode(blob, codec, where)[0]
    if values is None:
        return None
    return values if isinstance(values, list) else list(values)


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def decode_chunk(
    blob: bytes, codec: Codec, where: str
) -> tuple[list[Any], dict[int, RemoteError], dict[int, int]]:
    """A chunk's values, errors by offset and attempts by offset, checked."""
    values, errors, *rest = _decode(blob, codec, where)
    pieced = values is None
    attempts: dict[int, int] = {}
    for pair in rest[0] if rest and isinstance(rest[0], (list, tuple)) else ():
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(map(_is_count, pair)):
            raise ProtocolError(f"{where}: a chunk's attempts are not [offset, attempts] pairs")
        attempts[pair[0]] = pair[1]
    failed: dict[int, RemoteError] = {}
    for error in errors:
        if (
            not isinstance(error, (list, tuple))
            or len(error) < 5
            or not _is_count(error[0])
            or not all(isinstance(text, str) for text in error[1:4])
        ):
            raise ProtocolError(
                f"{where}: a chunk's error is not [offset, type, message, traceback, ...]"
            )
        offset, type_name, message, tb, exc_obj, *kept = error
        if pieced:  # the exception and the input were encoded on their own
            exc_obj = _piece(exc_obj, codec)[1]
            loaded, value = _piece(kept[0] if kept else None, codec)
            kept = [value] if loaded else []
        exc_obj = exc_obj if isinstance(exc_obj, BaseException) else None
        failed[offset] = RemoteError(type_name, message, tb, exc_obj, tuple(kept[:1]) or None)
    if pieced:
        values = _values(rest[1], codec, failed, where)
    return values, failed, attempts


def _piece(data: Any, codec: Codec) -> tuple[bool, Any]:
    """(True, the value) of a piece that decodes here, else (False, None)."""
    if not isinstance(data, bytes):
        return False, None
    try:
        return True, codec.loads(data)
    except BaseException as exc:  # its class is not importable here, or rebuilding it raised
        reraise_interrupt(exc)
        return False, None


def _values(
    pieces: Sequence[Any], codec: Codec, failed: dict[int, RemoteError], where: str
) -> list[Any]:
    """The values of a chunk encoded item by item; one that cannot be decoded here
    becomes its item's UnreadableResult (added to ``failed``)."""
    values: list[Any] = []
    for offset, piece in enumerate(pieces):
        if piece is None or offset in failed:
            values.append(None)
            continue
        if (
            not isinstance(piece, (list, tuple))
            or len(piece) != 2
            or not isinstance(piece[0], str)
            or not isinstance(piece[1], bytes)
        ):
            raise ProtocolError(f"{where}: a chunk's value is not [type name, encoding]")
        try:
            values.append(codec.loads(piece[1]))
        except BaseException as exc:  # its class is not importable here, or rebuilding it raised
            reraise_interrupt(exc)
            values.append(None)
            failure = describe(exc)
            text = (
                f"the item's result, a {piece[0]}, cannot be decoded here: "
                f"{failure.type}: {failure.message}"
            )
            failed[offset] = RemoteError(UNREADABLE, text, failure.traceback)
    return values


def iter_outcomes(entry: ResultEntry, codec: Codec, where: str) -> Iterator[Outcome]:
    """Decode a result entry into one Outcome per item, in entry order.

    Raises ProtocolError, naming ``where``, for an entry that is not what a node
    writes (and nothing else: result entries come from Redis). One chunk of an
    entry that cannot be decoded (a node from before item-by-item encoding wrote
    a value this reader cannot unpickle, or Redis holds changed bytes) fails
    its own items only, as UnreadableResult, when the others tell how many it holds.
    """
    position = 0
    offsets = entry.offsets
    for i, blob in enumerate(entry.blobs):
        try:
            values, failed, attempts = decode_chunk(blob, codec, where)
        except ProtocolError as exc:
            values, failed, attempts = _unreadable(exc, entry, i, position, codec, where)
        for offset, value in enumerate(values):
            if offsets is not None and position >= len(offsets):
                position += 1
                continue
            index = entry.start + (position if offsets is None else offsets[position])
            error = failed.get(offset)
            tries = attempts.get(offset, 1)
            if error is None:
                yield Outcome(index, True, value, None, tries)
            else:
                yield Outcome(index, False, None, error, tries)
            position += 1
    if position != entry.count:
        raise ProtocolError(
            f"{where}: result entry holds {position} outcomes, expected {entry.count}"
        )


def _unreadable(
    exc: ProtocolError, entry: ResultEntry, i: int, position: int, codec: Codec, where: str
) -> tuple[list[Any], dict[int, RemoteError], dict[int, int]]:
    """Blob ``i`` of the entry as items that failed with ``exc``: as many as the
    entry's count leaves after the other blobs; ``exc`` itself when that cannot
    be told (another blob cannot be decoded either)."""
    rest = sum(len(decode_chunk(blob, codec, where)[0]) for blob in entry.blobs[i + 1 :])
    size = entry.count - position - rest
    if size <= 0:
        raise exc
    error = RemoteError(UNREADABLE, f"this item's chunk of results cannot be read: {exc}", "")
    return [None] * size, dict.fromkeys(range(size), error), {}


def merged_outcomes(entries: Sequence[ResultEntry], codec: Codec, where: str) -> list[Outcome]:
    """A batch's outcomes: its own entry, overlaid by its retries in round order."""
    outcomes = list(iter_outcomes(entries[0], codec, where))
    first = entries[0].start
    for retry in entries[1:]:
        for outcome in iter_outcomes(retry, codec, where):
            if not 0 <= outcome.index - first < len(outcomes):
                raise ProtocolError(f"{where}: a retry's item {outcome.index} is not in its batch")
            previous = outcomes[outcome.index - first]
            attempts = previous.attempts + outcome.attempts
            outcomes[outcome.index - first] = Outcome(
                outcome.index, outcome.ok, outcome.value, outcome.error, attempts
            )
    return outcomes
