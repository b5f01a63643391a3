"""Lines of an input file, each read with a cap on its length.

A line longer than the cap is never held whole: its first bytes are read, the
rest is skipped a piece at a time, and the line is reported as malformed
(``file:line: line longer than N bytes``). So a small .gz file that
decompresses to gigabytes of one line costs a reader megabytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from taskfan.errors import InvalidInput

#: bytes read at a time while skipping the rest of a line over the cap
_SKIP_PIECE = 1024 * 1024

Lines = Iterator[tuple[int, "str | InvalidInput"]]


def _capped(stream: Iterable[bytes], cap: int | None) -> Iterator[bytes | None]:
    """The raw lines of ``stream``; None for a line over ``cap`` bytes (line break
    not counted), which is skipped without being held whole."""
    readline = getattr(stream, "readline", None)
    if cap is None or readline is None:  # an iterable of lines the caller already holds
        for raw in stream:
            yield None if cap is not None and len(raw.rstrip(b"\r\n")) > cap else raw
        return
    while raw := readline(cap + 2):  # room for the content, then "\r\n"
        if len(raw) == cap + 2 and not raw.endswith(b"\n"):  # cut off: over the cap
            while raw and not raw.endswith(b"\n"):
                raw = readline(_SKIP_PIECE)
            yield None
        else:
            yield None if len(raw.rstrip(b"\r\n")) > cap else raw


def text_lines(stream: Iterable[bytes], source: str, cap: int | None) -> Lines:
    """(line number, text without its line break), or the error for a line that
    is not UTF-8 or is longer than ``cap`` bytes."""
    for number, raw in enumerate(_capped(stream, cap), 1):
        if raw is None:
            yield number, InvalidInput(too_long("line", cap), source=source, line=number)
            continue
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            yield number, InvalidInput(f"not UTF-8 text ({exc.reason})", source=source, line=number)
            continue
        yield number, text.rstrip("\r\n")


def too_long(what: str, cap: int | None) -> str:
    return (
        f"{what} longer than {cap} bytes (max_item_bytes: --max-item-bytes, "
        "TASKFAN_MAX_ITEM_BYTES): pass large data by reference (a path or URL the task opens)"
    )
