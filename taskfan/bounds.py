"""Bounds of every number a user sets that reaches a wait, a sleep, a deadline or
an allocation.

A number with no upper bound is a crash waiting for its value: ``hard_timeout=1e10``
once raised OverflowError in a node's main loop (``SimpleQueue.get(timeout=...)``
refuses more than ``threading.TIMEOUT_MAX``), and every node that reclaimed the
batch died the same way. So each such number is checked where it enters (task
options and a job's numbers at enqueue, settings on creation, an entry where a
node parses it) against the bounds here, with an error that names it and its
value; and the node caps what reaches a wait again (``capped``), in case a path
was missed.

NaN fails every comparison, so "lo <= value <= hi" refuses it; bools are not
numbers here, though Python says ``True == 1``.
"""

from __future__ import annotations

import math
from typing import Any

from taskfan.fields import MAX_COUNT

__all__ = ["MAX_COUNT"]

DAY = 24 * 3600.0

#: timeout and hard_timeout of a task, seconds (less than a millisecond would
#: round to no timer at all: setitimer counts microseconds)
MAX_TIMEOUT = 7 * DAY
MIN_TIMEOUT = 0.001
#: backoff and backoff_max of a task's retries, seconds
MAX_BACKOFF = DAY
#: retries of a task (each one an attempt that runs the task again)
MAX_RETRIES = 100
#: exception type names in a task's retry_on, and characters in one of them
MAX_RETRY_ON = 64
MAX_NAME = 200
#: seconds a finished job's keys are kept (Redis's EXPIRE takes far more; ten years)
MAX_RESULT_TTL = 10 * 365 * 24 * 3600
#: items per batch, items per chunk, deliveries: MAX_COUNT, a u32 like counts in entries
#: pool processes of a node
MAX_PROCESSES = 1024
#: a node's visibility_timeout and grace_period, seconds
MAX_LEASE = DAY
#: a node's longest blocking read, seconds
MAX_BLOCK = 3600.0
#: longest single wait of a node's main loop, seconds: it wakes, finds nothing
#: due and waits again, whatever deadline a value could have made
MAX_LOOP_WAIT = 60.0


def number(value: Any) -> bool:
    """A real number: an int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shown(value: Any) -> str:
    """``value`` for an error message, at most 100 characters (a huge int too)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def seconds_problem(
    name: str, value: Any, most: float, zero: bool = True, least: float = 0.0
) -> str | None:
    """What is wrong with ``value`` as a number of seconds from ``least`` (more
    than 0 when not ``zero`` and no ``least``) to ``most``, naming ``name``; or None."""
    if least:
        low, lower = value >= least if number(value) else False, f"from {least:g}"
    else:
        low = (value >= 0 if zero else value > 0) if number(value) else False
        lower = "from 0" if zero else "more than 0"
    if number(value) and low and value <= most:
        return None
    return f"{name} must be a number of seconds {lower} and at most {most:g}, got {shown(value)}"


def count_problem(name: str, value: Any, least: int, most: int) -> str | None:
    """What is wrong with ``value`` as a whole number from ``least`` to ``most``; or None."""
    if type(value) is int and least <= value <= most:
        return None
    return f"{name} must be a whole number from {least} to {most}, got {shown(value)}"


def capped(seconds: float, most: float) -> float:
    """``seconds`` as a wait: from 0 to ``most``, whatever came in (NaN and
    negatives are 0). The node's last line of defence, after the checks above."""
    if not number(seconds) or math.isnan(seconds) or seconds <= 0:
        return 0.0
    return float(min(seconds, most))
