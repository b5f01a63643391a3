"""Records an operator's view passes over, with the reason.

``taskfan status``, ``jobs``, ``nodes``, ``inspect`` and the dashboard read
records that anyone who can write to Redis could have written: a queue name or
job id that is not UTF-8 or cannot be a name, a meta hash with a field that is
not a number, a node record that is not what nodes write, a result entry that
does not parse. Each view shows what it can read and lists the rest as
``Skipped`` (what kind, which one, why), instead of failing whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from taskfan.keys import JobKeys, QueueKeys

#: characters of a record's name shown when it is named
NAME_CHARS = 80


@dataclass(frozen=True)
class Skipped:
    """A record a view could not show: ``kind`` (queue, job, node, batch), its
    name (undecodable bytes escaped) and the reason."""

    kind: str
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.reason}"

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "reason": self.reason}


def shown(raw: Any) -> str:
    """A name as it can be printed: bytes that are not UTF-8 as ``\\xNN``, cut short."""
    name = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else str(raw)
    return name if len(name) <= NAME_CHARS else name[:NAME_CHARS] + "..."


def _name(raw: Any, kind: str, check: Any, skipped: list[Skipped]) -> str | None:
    try:
        name = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        check(name)
    except UnicodeDecodeError:
        skipped.append(Skipped(kind, shown(raw), "not UTF-8"))
        return None
    except ValueError:
        reason = "cannot be a name: empty, or holds braces, colons or whitespace"
        skipped.append(Skipped(kind, shown(raw), reason))
        return None
    return name


def queue_name(raw: Any, skipped: list[Skipped]) -> str | None:
    """The queue name ``raw``, or None (and a Skipped) when it cannot be one."""
    return _name(raw, "queue", QueueKeys, skipped)


def job_id(raw: Any, skipped: list[Skipped]) -> str | None:
    """The job id ``raw``, or None (and a Skipped) when it cannot be one."""
    return _name(raw, "job", JobKeys, skipped)


def finite(value: Any) -> float | None:
    """``value`` as a finite float, else None (JSON has no NaN or Infinity)."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def describe(skipped: list[dict[str, str]]) -> list[str]:
    """Lines for a view's text output: how many records were skipped, and each."""
    if not skipped:
        return []
    head = f"skipped {len(skipped)} unreadable record{'s' if len(skipped) > 1 else ''}"
    return [head, *(f"  {s['kind']} {s['name']}: {s['reason']}" for s in skipped)]
