"""Reading job inputs from files for the CLI: JSONL, CSV, or plain lines.

Every reader is a generator over the file's lines: it holds one record at a
time, so a file of millions of lines streams into ``Client.map`` with flat
memory. A malformed record raises ``InvalidInput`` naming the file, the line and
what is wrong; with ``skip_invalid`` it becomes a ``Rejected`` item instead,
which the producer records as a failed item (see ``producer.rejects``).

- ``jsonl``: one JSON value per line is one item; blank lines are skipped.
- ``csv``: a header row, then one item per row: a dict of column -> value
  (strings, or with ``csv_types="auto"`` ints, floats, booleans and None).
- ``lines``: every line, without its line break, is one string item (blank
  lines too: they are the empty string).

With ``max_item_bytes``, an item whose JSON encoding is larger is malformed
too (``file:line: the item encodes to ...``). Only lines long enough to come
near the limit are encoded to measure them, so the check costs nothing on
ordinary files.

Lines are read with a cap (``max_line_bytes``, by default ``max_item_bytes``):
a longer line is malformed (``file:line: line longer than N bytes``) and is
never held whole. Its first N bytes are read, the rest is skipped a piece at a
time, so a small .gz file that decompresses to gigabytes of one line costs
megabytes, not gigabytes. A CSV record that spans lines (a quoted field with
line breaks) is capped the same way as a whole.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import re
import sys
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from producer.ops.input_lines import Lines, text_lines, too_long
from producer.rejects import Rejected
from taskfan.errors import InvalidInput, TaskfanError
from taskfan.limits import DECODED_PER_BYTE, DECODED_PER_CONTAINER, decoded_size, format_size

FORMATS = ("jsonl", "csv", "lines")
CSV_TYPES = ("str", "auto")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".txt": "lines",
    ".lines": "lines",
}
STDIN = "-"


def detect_format(path: str) -> str:
    """The format named by the file's extension (``.gz`` looked through), else jsonl."""
    stem = path[:-3] if path.endswith(".gz") else path
    return _EXTENSIONS.get(os.path.splitext(stem)[1].lower(), "jsonl")


@contextmanager
def open_input(path: str) -> Iterator[IO[bytes]]:
    """The file as bytes (``-`` is stdin; ``.gz`` files are decompressed)."""
    if path == STDIN:
        yield sys.stdin.buffer
        return
    try:
        opener: Any = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as stream:
            yield stream
    except TaskfanError:
        raise  # e.g. BrokerUnavailable (an OSError) from the enqueue reading the file
    except (OSError, EOFError, zlib.error) as exc:  # also a damaged .gz file, found while reading
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInput(f"cannot read: {reason}", source=path) from None


def read(
    stream: Iterable[bytes],
    fmt: str,
    *,
    source: str,
    csv_types: str = "str",
    skip_invalid: bool = False,
    max_item_bytes: int | None = None,
    max_line_bytes: int | None = None,
) -> Iterator[Any]:
    """The items of ``stream`` in ``fmt``; ``source`` names it in errors.

    ``max_line_bytes`` (default: ``max_item_bytes``; None: no cap) bounds what
    one line costs to read when ``stream`` has ``readline`` (a file, stdin).
    """
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    size = _SizeCheck(source, max_item_bytes)
    cap = max_item_bytes if max_line_bytes is None else max_line_bytes
    lines = text_lines(stream, source, cap)
    if fmt == "csv":
        if csv_types not in CSV_TYPES:
            raise InvalidInput(f"unknown csv types {csv_types!r}: one of {', '.join(CSV_TYPES)}")
        records = _csv(lines, source, csv_types == "auto", size, cap)
    else:
        records = (_jsonl if fmt == "jsonl" else _lines)(lines, size)
    for record in records:
        if isinstance(record, InvalidInput):
            if not skip_invalid:
                raise record
            yield Rejected(str(record))
        else:
            yield record


class _SizeCheck:
    """Whether an item's JSON encoding fits ``limit``; measured only for long lines."""

    #: bytes of JSON one character of input can become at most (a \\u escape), and
    #: one cell (a float such as 1e15 written out in full, quotes, a separator)
    PER_CHAR, PER_CELL = 6, 32

    def __init__(self, source: str, limit: int | None) -> None:
        self.source = source
        self.limit = limit
        self._encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

    def decoded(self, text: str, line: int) -> InvalidInput | None:
        """The InvalidInput for a JSON line whose items would take more than
        ``DECODED_PER_BYTE`` times the limit once decoded (an item of scalars within
        the limit never does: only one of many containers, ``[[],[],...]``, can), by
        the estimate nodes budget with; None when it may be decoded."""
        limit = self.limit
        if limit is None or len(text) * (DECODED_PER_BYTE + DECODED_PER_CONTAINER) <= (
            DECODED_PER_BYTE * limit
        ):
            return None
        estimate, containers = decoded_size("json", text.encode("utf-8", "surrogatepass"))
        if estimate <= DECODED_PER_BYTE * limit:
            return None
        return InvalidInput(
            f"the item would take about {format_size(estimate)} decoded ({containers:,} "
            f"lists and objects), over {DECODED_PER_BYTE} times max_item_bytes "
            f"({format_size(DECODED_PER_BYTE * limit)}; --max-item-bytes, "
            "TASKFAN_MAX_ITEM_BYTES): pass large data by reference (a path or URL the task opens)",
            source=self.source,
            line=line,
        )

    def __call__(self, item: Any, chars: int, cells: int, line: int) -> Any:
        """The item, or the InvalidInput that says it is too large."""
        limit = self.limit
        if limit is None or chars * self.PER_CHAR + cells * self.PER_CELL <= limit:
            return item
        size = len(self._encoder.encode(item).encode("utf-8"))
        if size <= limit:
            return item
        return InvalidInput(
            f"the item encodes to {format_size(size)}, over max_item_bytes "
            f"({format_size(limit)}; --max-item-bytes, TASKFAN_MAX_ITEM_BYTES): pass large "
            "data by reference (a path or URL the task opens)",
            source=self.source,
            line=line,
        )


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not standard JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is out of range for a float")
    return value


def _jsonl(lines: Lines, size: _SizeCheck) -> Iterator[Any]:
    source = size.source
    for number, text in lines:
        if isinstance(text, InvalidInput):
            yield text
        elif text.strip():
            if (too_big := size.decoded(text, number)) is not None:
                yield too_big
                continue
            try:
                yield size(
                    json.loads(text, parse_constant=_no_constants, parse_float=_finite),
                    len(text),
                    1,
                    number,
                )
            except json.JSONDecodeError as exc:
                yield InvalidInput(
                    f"not valid JSON: {exc.msg} (column {exc.colno})", source=source, line=number
                )
            except (ValueError, RecursionError) as exc:
                yield InvalidInput(f"not valid JSON: {exc}", source=source, line=number)


def _lines(lines: Lines, size: _SizeCheck) -> Iterator[Any]:
    for number, text in lines:
        yield text if isinstance(text, InvalidInput) else size(text, len(text), 1, number)


_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")
_BOOLS = {"true": True, "false": False}


def parse_cell(text: str) -> Any:
    """A CSV cell read with ``--csv-types auto``: int, float, bool, None or the text.

    Numbers Python or JSON cannot carry (over 4300 digits, beyond 1e308) stay text.
    """
    if text == "":
        return None
    if _INT.fullmatch(text):
        try:
            return int(text)
        except ValueError:
            return text
    if _FLOAT.fullmatch(text):
        value = float(text)
        return value if math.isfinite(value) else text
    return _BOOLS.get(text.lower(), text)


class _RecordTooLong(Exception):
    """A CSV record spans more lines than the cap allows (raised through csv.reader)."""


class _CsvLines:
    """The lines csv.reader parses: bad lines (kept in ``bad``) read as blank, and a
    record that grows past ``cap`` characters raises _RecordTooLong."""

    def __init__(self, lines: Lines, cap: int | None) -> None:
        self.lines = lines
        self.cap = cap
        self.bad: dict[int, InvalidInput] = {}  # lines that are malformed, by number
        self.number = 0  # the last line handed out
        self.record_chars = 0  # characters of the record being parsed so far

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        self.number, text = next(self.lines)
        if isinstance(text, InvalidInput):
            self.bad[self.number] = text
            text = ""
        self.record_chars += len(text) + 1
        if self.cap is not None and self.record_chars > self.cap:
            raise _RecordTooLong  # csv.reader starts afresh at the next line
        return text + "\n"


def _csv(lines: Lines, source: str, auto: bool, size: _SizeCheck, cap: int | None) -> Iterator[Any]:
    texts = _CsvLines(lines, cap)
    bad = texts.bad
    reader = csv.reader(texts, strict=True)
    header: list[str] | None = None
    while True:
        first = texts.number + 1
        texts.record_chars = 0
        try:
            row = next(reader)
        except StopIteration:
            return
        except _RecordTooLong:
            bad.clear()
            yield InvalidInput(
                too_long("a record of several lines", cap), source=source, line=first
            )
            continue
        except csv.Error as exc:
            bad.clear()
            yield InvalidInput(f"not valid CSV: {exc}", source=source, line=texts.number)
            continue
        broken = [bad.pop(n) for n in range(first, texts.number + 1) if n in bad]
        if broken:
            yield broken[0]
        elif not row:
            continue  # a blank line
        elif header is None:
            header = row
            if any(not name for name in header) or len(set(header)) < len(header):
                raise InvalidInput(
                    "the CSV header needs distinct, non-empty column names", source=source, line=1
                )
        elif len(row) != len(header):
            yield InvalidInput(
                f"has {len(row)} fields, the header has {len(header)}", source=source, line=first
            )
        else:
            if auto:
                item = {name: parse_cell(cell) for name, cell in zip(header, row, strict=True)}
            else:
                item = dict(zip(header, row, strict=True))
            chars = sum(map(len, row)) + sum(map(len, header))
            yield size(item, chars, 2 * len(row), first)
