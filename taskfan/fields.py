"""Reading the fields of stream entries and hashes that anyone could have written.

Whoever can write to Redis can write any bytes into a batch entry or a job's
meta hash, so every reader here checks what it reads and raises ProtocolError
naming the entry (``where``) and the field, never anything else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from taskfan.errors import ProtocolError

#: largest count (a u32 in result entries) and largest other number in an entry
MAX_COUNT = 2**32 - 1
MAX_NUMBER = 2**63 - 1
_DIGITS = re.compile(rb"[0-9]{1,19}")


def text(fields: Mapping[bytes, bytes], name: bytes, where: str) -> str:
    """A field that must be there, as UTF-8 text."""
    try:
        return fields[name].decode("utf-8")
    except KeyError:
        raise ProtocolError(f"{where}: missing field {name.decode()!r}") from None
    except UnicodeDecodeError:
        raise ProtocolError(f"{where}: field {name.decode()!r} is not UTF-8") from None


def whole_number(
    fields: Mapping[bytes, bytes], name: bytes, where: str, most: int = MAX_NUMBER
) -> int:
    """A field holding a whole number from 0 to ``most``, in plain ASCII digits."""
    if name not in fields:
        raise ProtocolError(f"{where}: missing field {name.decode()!r}")
    raw = fields[name]
    if not _DIGITS.fullmatch(raw):
        shown = raw[:40].decode("utf-8", "replace")
        if raw[:1] == b"-" and _DIGITS.fullmatch(raw[1:]):
            raise ProtocolError(f"{where}: field {name.decode()!r} is negative: {shown}")
        raise ProtocolError(f"{where}: field {name.decode()!r} is not an integer: {shown!r}")
    value = int(raw)
    if value > most:
        raise ProtocolError(f"{where}: field {name.decode()!r} is too large: {value} > {most}")
    return value


def whole_numbers(raw: bytes, most: int) -> list[int] | None:
    """A JSON list of whole numbers from 0 to ``most``; None when ``raw`` is anything
    else (the caller names the field)."""
    try:
        numbers = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(numbers, list) or not all(type(n) is int and 0 <= n <= most for n in numbers):
        return None
    return numbers


def queue_names(raw: bytes | str | None) -> list[str]:
    """A node record's ``queues`` (or ``rq_queues``): the JSON list nodes write (a
    name may hold a comma), or the comma list older nodes wrote. The one reader of
    it: producers count the nodes serving a queue from it (``producer.sizing``,
    ``producer.listeners``) and nodes their peers (``worker.core.unrunnable``), so a
    change of the encoding cannot miss one of them again. Anything unreadable or
    over 64 KiB counts as no queue (anyone can write a record)."""
    if not raw or len(raw) > 65536:
        return []
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        names = json.loads(text)
    except (ValueError, RecursionError):
        return text.split(",")
    return [str(n) for n in names] if isinstance(names, list) else [str(names)]
