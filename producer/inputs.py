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
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from producer.rejects import Rejected
from taskfan.errors import InvalidInput

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
    except OSError as exc:  # also a damaged .gz file, found while reading
        raise InvalidInput(f"cannot read: {exc.strerror or exc}", source=path) from None


def read(
    stream: Iterable[bytes],
    fmt: str,
    *,
    source: str,
    csv_types: str = "str",
    skip_invalid: bool = False,
) -> Iterator[Any]:
    """The items of ``stream`` in ``fmt``; ``source`` names it in errors."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "csv":
        if csv_types not in CSV_TYPES:
            raise InvalidInput(f"unknown csv types {csv_types!r}: one of {', '.join(CSV_TYPES)}")
        records = _csv(stream, source, csv_types == "auto")
    else:
        records = (_jsonl if fmt == "jsonl" else _lines)(stream, source)
    for record in records:
        if isinstance(record, InvalidInput):
            if not skip_invalid:
                raise record
            yield Rejected(str(record))
        else:
            yield record


def _text_lines(stream: Iterable[bytes], source: str) -> Iterator[tuple[int, str | InvalidInput]]:
    """(line number, text without its line break), or the error for a line that
    is not UTF-8."""
    for number, raw in enumerate(stream, 1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            yield number, InvalidInput(f"not UTF-8 text ({exc.reason})", source=source, line=number)
            continue
        yield number, text.rstrip("\r\n")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not standard JSON")


def _jsonl(stream: Iterable[bytes], source: str) -> Iterator[Any]:
    for number, text in _text_lines(stream, source):
        if isinstance(text, InvalidInput):
            yield text
        elif text.strip():
            try:
                yield json.loads(text, parse_constant=_no_constants)
            except json.JSONDecodeError as exc:
                yield InvalidInput(
                    f"not valid JSON: {exc.msg} (column {exc.colno})", source=source, line=number
                )
            except (ValueError, RecursionError) as exc:
                yield InvalidInput(f"not valid JSON: {exc}", source=source, line=number)


def _lines(stream: Iterable[bytes], source: str) -> Iterator[Any]:
    for _, text in _text_lines(stream, source):
        yield text


_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")
_BOOLS = {"true": True, "false": False}


def parse_cell(text: str) -> Any:
    """A CSV cell read with ``--csv-types auto``: int, float, bool, None or the text."""
    if text == "":
        return None
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return _BOOLS.get(text.lower(), text)


def _csv(stream: Iterable[bytes], source: str, auto: bool) -> Iterator[Any]:
    bad: dict[int, InvalidInput] = {}  # lines that are not UTF-8, by number

    def texts() -> Iterator[str]:
        for number, text in _text_lines(stream, source):
            if isinstance(text, InvalidInput):
                bad[number] = text
                text = ""
            yield text + "\n"

    reader = csv.reader(texts(), strict=True)
    header: list[str] | None = None
    while True:
        first = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield InvalidInput(f"not valid CSV: {exc}", source=source, line=reader.line_num)
            continue
        broken = [bad.pop(n) for n in range(first, reader.line_num + 1) if n in bad]
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
        elif auto:
            yield {name: parse_cell(cell) for name, cell in zip(header, row, strict=True)}
        else:
            yield dict(zip(header, row, strict=True))
