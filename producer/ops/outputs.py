"""What the CLI writes: outcomes as JSONL, and a progress line on stderr.

One JSON object per item, in input order::

    {"index": 0, "ok": true, "result": 42}
    {"index": 3, "ok": false, "error": {"type": "ValueError", "message": "...", "traceback": "..."}}
    {"index": 4, "ok": false, "cancelled": true, "error": {"type": "CancelledError", ...}}

(the last: an item of a cancelled job with no outcome recorded).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, NamedTuple

from taskfan.boundary import brief, reraise_interrupt
from taskfan.outcomes import Outcome

STDOUT = "-"


class Counts(NamedTuple):
    ok: int
    failed: int  #: cancelled items included
    cancelled: int = 0


def outcome_record(outcome: Outcome) -> dict[str, Any]:
    if outcome.ok:
        return {"index": outcome.index, "ok": True, "result": outcome.value}
    assert outcome.error is not None
    if outcome.cancelled:
        return {"index": outcome.index, "ok": False, "cancelled": True,
                "error": outcome.error.as_dict()}  # fmt: skip
    return {"index": outcome.index, "ok": False, "error": outcome.error.as_dict()}


def outcome_line(outcome: Outcome) -> tuple[str, bool]:
    """The JSON line for one outcome, and whether the item succeeded.

    A result JSON cannot carry (possible in jobs enqueued from Python with the
    pickle codec) is written as that item's error.
    """
    try:
        return json.dumps(outcome_record(outcome), ensure_ascii=False, allow_nan=False), outcome.ok
    except BaseException as exc:  # TypeError, RecursionError, or what a dict subclass ran
        reraise_interrupt(exc)
        error = {
            "type": "EncodeError",
            "message": f"the result cannot be written as JSON: {brief(exc)}",
            "traceback": "",
        }
        return json.dumps({"index": outcome.index, "ok": False, "error": error}), False


def write_outcomes(
    outcomes: Iterable[Outcome], out: IO[str], *, failed_only: bool = False
) -> Counts:
    """Write one JSON line per outcome (or per failed one); count them all."""
    ok = failed = cancelled = 0
    for outcome in outcomes:
        line, succeeded = outcome_line(outcome)
        if succeeded:
            ok += 1
            if failed_only:
                continue
        else:
            failed += 1
            cancelled += outcome.cancelled
        out.write(line + "\n")
    out.flush()
    return Counts(ok, failed, cancelled)


@contextlib.contextmanager
def open_output(path: str) -> Iterator[IO[str]]:
    """``-`` is stdout; anything else a file, written as UTF-8."""
    if path == STDOUT:
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8") as out:
        yield out


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressBar:
    """A one-line progress display: done, failed, rate and ETA.

    On a terminal it redraws one line in place; on anything else (forced with
    ``--progress``) it writes a line at most every ``quiet_interval`` seconds.
    The rate counts items done since ``counted_from`` (0 for a bar made before
    its job was enqueued) or, when None, since the first reading.
    """

    WIDTH = 24

    def __init__(
        self,
        stream: IO[str],
        *,
        enabled: bool,
        tty: bool | None = None,
        quiet_interval: float = 2.0,
        counted_from: int | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty() if tty is None else tty
        self.quiet_interval = quiet_interval
        self.clock = clock
        self.started = clock()
        #: items done when we started watching; None: the first reading
        self._first_done = counted_from
        self._last_drawn = float("-inf")
        self._width = 0
        #: said at the end of the line while set (e.g. no live node serves the queue)
        self.note: str | None = None

    @property
    def interval(self) -> float:
        """How often it is worth updating."""
        return 0.2 if self.tty else self.quiet_interval

    def line(self, done: int, failed: int, total: int | None) -> str:
        """The text of the display; the rate counts only items done while we watched."""
        now = self.clock()
        if self._first_done is None:
            self._first_done = done
        elapsed = now - self.started
        rate = (done - self._first_done) / elapsed if elapsed > 0 else 0.0
        parts = []
        if total:
            filled = int(self.WIDTH * done / total)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            parts.append(f"[{bar}] {done}/{total} {100 * done // total:3d}%")
        else:
            parts.append(f"{done}/{total if total is not None else '?'}")
        parts.append(f"{failed} failed")
        parts.append(f"{rate:.1f}/s")
        if total and done < total:
            parts.append(f"ETA {_duration((total - done) / rate)}" if rate > 0 else "ETA ?")
        else:
            parts.append(f"in {_duration(elapsed)}")
        if self.note:
            parts.append(self.note)
        return " | ".join(parts)

    def update(self, done: int, failed: int, total: int | None, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if not force and now - self._last_drawn < self.interval:
            return
        self._last_drawn = now
        text = self.line(done, failed, total)
        if self.tty:
            pad = " " * max(0, self._width - len(text))
            self.stream.write(f"\r{text}{pad}")
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the line the display was drawing on."""
        if self.enabled and self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
