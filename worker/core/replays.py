"""Bounding replays of signed batch entries (``worker.core.entry_checks`` asks, with a secret).

A copy of a signed entry is still signed: anyone who can read a queue stream can
add an entry again, and it would run again. So a producer with a secret signs
into each entry its issue time (field ``t``, whole seconds since the epoch) and
its job's nonce (field ``u``, a random value also signed into the job's meta),
and a node refuses a signed entry

- issued longer ago than ``max_entry_age`` (default: the result TTL), or as far
  in the future (a clock that is off by that much is an error too);
- whose job no longer exists (it expired or was deleted);
- whose job has finished (but for a retry round's entries: a round's entries go
  to the queue before the round opens the job again, see lua/_rounds.lua);
- whose job's meta holds another nonce (the job id was used again, or the meta
  was written again by someone else).

A refused entry is dead-lettered with the reason and nothing of it is recorded:
its job has ended, or what it claims cannot be trusted. Cancelled and abandoned
jobs are skipped as before (``worker.sources.streams.job_states``). What stays open: a replay
within the age limit of a batch of a job that is still active runs again;
``record.lua`` records each batch once, so its first outcome stands.
"""

from __future__ import annotations

from taskfan.fields import MAX_NUMBER
from worker.core.batches import Delivery


def replay_reason(delivery: Delivery, max_age: int, now: float) -> str | None:
    """Why this signed entry must not run (a replay), or None."""
    fields = delivery.fields or {}
    issued = fields.get(b"t", b"")
    if not issued.isdigit() or int(issued) > MAX_NUMBER:
        return "replay refused: field 't' (the signed issue time) is missing or not a number"
    age = now - int(issued)
    if abs(age) > max_age:
        when = f"{age:.0f}s ago" if age > 0 else f"{-age:.0f}s in the future"
        return (
            f"replay refused: issued {when}, more than max_entry_age ({max_age}s; "
            "--max-entry-age, TASKFAN_MAX_ENTRY_AGE): a copy of an old entry, a batch that "
            "waited in the queue too long, or a clock that is off"
        )
    job = delivery.job
    if job is None:
        return None  # not looked up: the entry's job id is unusable, and parsing refuses it
    if job.state is None:
        return "replay refused: its job no longer exists (it expired or was deleted)"
    if job.state == b"finished" and b"r" not in fields:
        return "replay refused: its job has finished (every batch is recorded)"
    if job.state != b"active" and job.state != b"finished":
        return None  # cancelled or abandoned: skipped, as for any node
    if job.nonce is None or job.nonce != fields.get(b"u"):
        return (
            "replay refused: its nonce is not its job's (the job id was used again, or the "
            "job's meta was written again)"
        )
    return None
