"""RQ's times: its text format for job fields, and the datetimes its own code takes."""

from __future__ import annotations

from datetime import datetime, timezone

from rq.utils import utcformat

_second_text: tuple[int, str] = (-1, "")


def now_text(ts: float) -> str:
    """An epoch time in RQ's text format (``rq.utils.utcformat``), cheaply: the
    text up to the second is computed once per second."""
    global _second_text
    second = int(ts)
    if _second_text[0] != second:
        text = utcformat(datetime.fromtimestamp(second, timezone.utc))
        _second_text = (second, text[: text.index(".")])
    micros = round((ts - second) * 1_000_000)
    if micros >= 1_000_000:  # rounding up into the next second
        return utcformat(datetime.fromtimestamp(ts, timezone.utc))
    return f"{_second_text[1]}.{micros:06d}Z"


def dt(ts: float) -> datetime:
    """An epoch time as the aware datetime RQ's code holds."""
    return datetime.fromtimestamp(ts, timezone.utc)


def working_seconds(started: float, ended: float) -> float:
    """What RQ adds to the worker's total_working_time: ended_at - started_at."""
    return (dt(ended) - dt(started)).total_seconds()
