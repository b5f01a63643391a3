"""Counting what a chaos test left behind, straight from Redis.

``census`` reads a job's results hash and events stream directly, not through
``Job.outcomes`` (which walks batch by batch and would hide an item recorded
twice), and counts items with no outcome (lost), outcomes beyond one per item
or recordings beyond one per batch (duplicated), and values that are wrong.

``held_batches`` and ``recorded_at`` give recovery times: the batches a node
held when it was killed or cut off, and when each batch was first recorded
(the events stream's entry ids carry the server's clock, in milliseconds).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from taskfan.codec import get_codec
from taskfan.keys import GROUP, JobKeys, QueueKeys
from taskfan.meta import JobMeta
from taskfan.outcomes import ResultEntry, iter_outcomes
from taskfan.protocol import BatchEntry


@dataclass(frozen=True)
class Census:
    total: int  #: items in the job
    lost: int  #: items with no outcome
    duplicated: int  #: outcomes beyond one per item, plus recordings beyond one per batch
    wrong: int  #: items whose outcome is not the expected one
    failed: dict[int, tuple[str, str]]  #: index -> (error type, message) of failed items
    meta: JobMeta
    results_fields: int  #: fields of the results hash


def census(r: redis.Redis, job_id: str, expected: Callable[[int], Any] | None = None) -> Census:
    """Every outcome of the job, counted; ``expected(index)`` is the right value of
    a good item (failed items are left to the caller, in ``failed``)."""
    keys = JobKeys(job_id)
    raw: Any = r.hgetall(keys.meta)
    meta = JobMeta.parse(job_id, raw)
    codec = get_codec(meta.codec)
    seen: Counter[int] = Counter()
    failed: dict[int, tuple[str, str]] = {}
    wrong = 0
    results: Any = r.hgetall(keys.results)
    for field, data in results.items():
        where = f"job {job_id} results field {field.decode()}"
        for outcome in iter_outcomes(ResultEntry.parse(data, where), codec, where):
            seen[outcome.index] += 1
            if outcome.error is not None:
                failed[outcome.index] = (outcome.error.type, outcome.error.message)
            elif expected is not None and outcome.value != expected(outcome.index):
                wrong += 1
    events: Any = r.xrange(keys.events)
    recordings = Counter(fields[b"b"] for _, fields in events if b"b" in fields)
    lost = sum(1 for index in range(meta.total) if not seen[index])
    duplicated = sum(n - 1 for n in seen.values()) + sum(n - 1 for n in recordings.values())
    wrong += sum(n for index, n in seen.items() if not 0 <= index < meta.total)
    return Census(meta.total, lost, duplicated, wrong, failed, meta, len(results))


def held_batches(r: redis.Redis, consumer: str, queue: str = "default") -> set[str]:
    """Results fields of the batches pending for ``consumer`` (a node's name)."""
    stream = QueueKeys(queue).stream
    try:
        pending: Any = r.xpending_range(stream, GROUP, "-", "+", 10_000, consumername=consumer)
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        return set()  # no node has created the group yet: nobody holds anything
    pipe = r.pipeline(transaction=False)
    for item in pending:
        pipe.xrange(stream, item["message_id"], item["message_id"])
    held = set()
    for reply in pipe.execute():
        for entry_id, fields in reply:  # empty when the entry was deleted meanwhile
            held.add(BatchEntry.parse(fields, f"entry {entry_id!r}").field)
    return held


def recorded_at(r: redis.Redis, job_id: str) -> dict[str, float]:
    """Results field -> when it was first recorded (Redis clock, seconds)."""
    events: Any = r.xrange(JobKeys(job_id).events)
    first: dict[str, float] = {}
    for entry_id, fields in events:
        if b"b" in fields:
            field = fields[b"b"].decode()
            first.setdefault(field, int(entry_id.split(b"-")[0]) / 1000)
    return first


def redis_now(r: redis.Redis) -> float:
    """The server's clock, the one the events stream's ids use."""
    seconds, micros = r.time()
    return seconds + micros / 1e6


def recovery(held: set[str], at: float, recorded: dict[str, float]) -> tuple[float | None, int]:
    """Seconds from ``at`` until the last of ``held`` that was not yet recorded at
    ``at`` got recorded (None when all were), and how many such batches there were."""
    late = [recorded[field] - at for field in held if recorded.get(field, at) > at]
    missing = [field for field in held if field not in recorded]
    assert not missing, f"batches never recorded: {sorted(missing)}"
    return (max(late) if late else None), len(late)
