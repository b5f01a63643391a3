"""Size limits: bytes per item and per batch, for inputs and for results.

Redis refuses a single value over ``proto-max-bulk-len`` (512 MB by default),
and a big value costs on every hop: the producer holds it, Redis copies it into
memory, its append-only file and its replicas, a node holds it encoded and
decoded (Python objects take several times their encoded size) and pipes it to
its pool. So:

- ``max_batch_bytes`` (default 64 MiB, at most 512 MiB): an encoded batch
  payload, and a node's result entry for a batch. 64 MiB keeps a batch 8 times
  under Redis's limit and a node's memory for one batch in the hundreds of
  megabytes. Producers split a batch that comes out bigger (fewer items per
  entry); nodes dead-letter a bigger payload, and fail the items of the
  largest result chunks until the entry fits.
- ``max_item_bytes`` (default 16 MiB, at most ``max_batch_bytes``): one
  encoded item, and one item's encoded result. An item over it is refused at
  enqueue, naming its index (and file and line for CLI input); a result over it
  is recorded as that item's error (``ResultTooLarge``). Large data travels
  better by reference: a path or URL the task opens.
- ``max_decoded_bytes`` (a node's; default ``DECODED_PER_BYTE`` times
  ``max_batch_bytes``, 1 GiB): what the items of the batches a node holds may
  take once decoded, by ``decoded_size``'s estimate, made from the payload's
  bytes before anything is decoded. Wire size alone says little: a JSON item
  of empty lists (``[[],[],...]``) takes 22 times its bytes as Python objects
  (``[0]`` elements 25 times), so a 15 MiB item once peaked a node at 619 MiB.
  A batch estimated over the limit is dead-lettered (``BatchTooLarge``); one
  that would take the node over it while it holds others waits, undecoded,
  until they are done (``worker.core.decoded_budget``).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from taskfan.errors import ConfigError

MiB = 1024 * 1024
DEFAULT_MAX_ITEM_BYTES = 16 * MiB
DEFAULT_MAX_BATCH_BYTES = 64 * MiB
#: Redis's default proto-max-bulk-len: no single value can be larger
REDIS_MAX_BULK = 512 * MiB
#: decoded bytes a payload byte may take as a scalar, at most (measured on
#: CPython 3.11: JSON strings of two characters 12.9 times their bytes, one
#: astral character 15 times, floats 9 times, ints 6 times)
DECODED_PER_BYTE = 16
#: decoded bytes a container may take beyond that (measured: an empty list in a
#: list 67 bytes, an empty dict 75, ``[0]`` 100 with its element; an empty set
#: 240, so a set opener counts 250)
DECODED_PER_CONTAINER = 100
#: bytes that may open a container, and what each counts: JSON's ``[`` and
#: ``{``; pickle's EMPTY_LIST, EMPTY_DICT, EMPTY_TUPLE, TUPLE1-3, EMPTY_SET and
#: FROZENSET (protocols 2 and up, which producers write). Counted anywhere,
#: inside strings too: an over-estimate. (Pickle can build anything by calling
#: a function, so for pickle this guards against accidents, not against whoever
#: may write pickle batches: those can run code anyway, docs/security.md.)
_SET = 250
_OPENERS = {
    "json": {b"[": DECODED_PER_CONTAINER, b"{": DECODED_PER_CONTAINER},
    "pickle": {
        **dict.fromkeys([b"]", b"}", b")", b"\x85", b"\x86", b"\x87"], DECODED_PER_CONTAINER),
        **dict.fromkeys([b"\x8f", b"\x91"], _SET),
    },
}
#: per codec, every byte that opens no container
_OTHERS = {
    codec: bytes(b for b in range(256) if bytes([b]) not in openers)
    for codec, openers in _OPENERS.items()
}

_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": MiB, "MB": MiB, "MIB": MiB}
_UNITS.update({"G": 1024 * MiB, "GB": 1024 * MiB, "GIB": 1024 * MiB})
_SIZE = re.compile(r"\s*(\d+)\s*([A-Za-z]*)\s*")


def parse_size(text: str) -> int:
    """Bytes from ``"1048576"``, ``"64M"``, ``"16MiB"``, ``"512k"`` (units of 1024)."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"expected a size in bytes such as 16777216, 16M or 16MiB, got {text!r}")
    return int(match.group(1)) * _UNITS[unit]


def format_size(size: int) -> str:
    """``16777216`` -> ``"16 MiB"``; exact bytes below 1 KiB."""
    for unit, scale in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", 1024)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


def decoded_size(codec: str, payload: bytes) -> tuple[int, int]:
    """(bytes, containers): an upper estimate of what ``payload`` takes decoded
    as Python objects, and the containers counted for it. C-speed byte counts,
    nothing decoded."""
    openers = _OPENERS.get(codec, {})
    # One pass that keeps only the openers (9 times faster than a count per opener).
    kept = payload.translate(None, _OTHERS[codec]) if openers else b""
    extra = sum(cost * kept.count(opener) for opener, cost in openers.items())
    return DECODED_PER_BYTE * len(payload) + extra, len(kept)


def default_max_decoded(max_batch_bytes: int) -> int:
    """A node's max_decoded_bytes when not set: any batch of scalars within
    max_batch_bytes fits."""
    return DECODED_PER_BYTE * max_batch_bytes


def check_limits(max_item_bytes: int, max_batch_bytes: int) -> str | None:
    """What is wrong with this pair of limits, or None."""
    for name, value in (("max_item_bytes", max_item_bytes), ("max_batch_bytes", max_batch_bytes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return f"{name} must be a whole number of bytes of at least 1, got {value!r}"
    if max_batch_bytes > REDIS_MAX_BULK:
        return (
            f"max_batch_bytes ({format_size(max_batch_bytes)}) must be at most "
            f"{format_size(REDIS_MAX_BULK)}: Redis refuses larger values"
        )
    if max_item_bytes > max_batch_bytes:
        return (
            f"max_item_bytes ({format_size(max_item_bytes)}) must be at most max_batch_bytes "
            f"({format_size(max_batch_bytes)}): every item travels in a batch"
        )
    return None


class Limits(NamedTuple):
    """A producer's or a node's pair of limits, checked on creation (``of``)."""

    max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES

    @classmethod
    def of(cls, max_item_bytes: int | None, max_batch_bytes: int | None) -> Limits:
        """Limits with defaults for None; ConfigError for a pair that cannot work."""
        limits = cls(
            DEFAULT_MAX_ITEM_BYTES if max_item_bytes is None else max_item_bytes,
            DEFAULT_MAX_BATCH_BYTES if max_batch_bytes is None else max_batch_bytes,
        )
        problem = check_limits(*limits)
        if problem:
            raise ConfigError(problem)
        return limits


DEFAULT_LIMITS = Limits()
