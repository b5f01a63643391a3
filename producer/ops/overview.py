"""What the cluster looks like: queues, jobs (with their rate and ETA), nodes, failures.

The data behind ``taskfan status``, ``jobs``, ``nodes`` and the dashboard; each
renders it its own way. Read-only, except for pruning and ending: a job whose
producer's enqueue lease lapsed ends ``abandoned`` when it is read
(``producer.lease``); job ids whose meta hash
is gone (expired after their result TTL, or purged) leave their queue's
``jobs`` index, and nodes whose record expired (they stopped beating) leave the
``nodes`` index, as they are found.

A record that cannot be read (a queue name or job id that cannot be one, a meta
hash that does not parse, a result entry that does not) is passed over and
listed in ``skipped`` (``producer.ops.skipped``); the rest still shows.
"""

from __future__ import annotations

import functools
from typing import Any

from producer import lease
from producer.listeners import nobody_serves
from producer.ops import peek
from producer.ops.nodelist import nodes as nodes  # re-exported: the views read nodes here
from producer.ops.skipped import Skipped, job_id, queue_name
from taskfan import keys
from taskfan.connection import RedisClient
from taskfan.errors import ProtocolError
from taskfan.keys import JobKeys, QueueKeys
from taskfan.meta import JobMeta, JobState

#: events read per active job to measure its recent rate
RATE_EVENTS = 64
#: the status words of a job that is not over
ACTIVE_WORDS = ("enqueuing", "queued", "running")
#: job status words ``taskfan jobs --state`` accepts; "active" is any unfinished status,
#: "failed" a finished job with failed items
STATES = (
    "active", "enqueuing", "queued", "running", "finished", "failed", "cancelled", "abandoned",
)  # fmt: skip


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def server_time(r: RedisClient) -> float:
    """Redis's clock: event ids carry it, so rates are measured against it."""
    seconds, micros = r.time()
    return seconds + micros / 1e6


# ----------------------------------------------------------------- queues


def queue_names(r: RedisClient, skipped: list[Skipped] | None = None) -> list[str]:
    """The queues in the registry; names that cannot be a queue's are skipped."""
    skipped = [] if skipped is None else skipped
    names = (queue_name(raw, skipped) for raw in r.smembers(keys.QUEUES))
    return sorted(name for name in names if name is not None)


def queue_status(r: RedisClient, name: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Batches waiting and in flight (delivered, not yet acknowledged), dead letters,
    jobs indexed, and consumers: the live nodes that serve the queue."""
    queue = QueueKeys(name)
    pipe = r.pipeline(transaction=False)
    pipe.xlen(queue.stream)
    pipe.xpending(queue.stream, keys.GROUP)
    pipe.xlen(queue.dead)
    pipe.zcard(queue.jobs)
    length, pending, dead, jobs = pipe.execute(raise_on_error=False)
    # XPENDING fails while the stream or its group does not exist yet.
    in_flight = int(pending["pending"]) if isinstance(pending, dict) else 0
    length = length if isinstance(length, int) else 0
    return {
        "name": name,
        "length": length,
        "waiting": max(0, length - in_flight),
        "in_flight": in_flight,
        "consumers": sum(1 for n in nodes if name in n["queues"]),
        "dead": dead if isinstance(dead, int) else 0,
        "jobs": jobs if isinstance(jobs, int) else 0,
    }


# ----------------------------------------------------------------- jobs


def job_status(meta: JobMeta, now: float, events: list[Any] | None = None) -> dict[str, Any]:
    """A job's fields, its progress (0-1), rate (items/s) and ETA (seconds).

    ``events``: its newest events (XREVRANGE), for an active job's recent rate.
    """
    end = meta.finished_at or now
    total = meta.total if meta.sealed else None
    rate = _rate(meta, now, events or [])
    eta = None
    if meta.state is JobState.ACTIVE and total is not None and rate > 0:
        eta = round(max(0, total - meta.done) / rate, 1)
    return {
        "id": meta.id,
        "queue": meta.queue,
        "function": meta.function,
        "status": meta.status,
        "done": meta.done,
        "failed": meta.failed,
        "cancelled": meta.cancelled,
        "total": total,
        "progress": round(meta.done / total, 4) if total else (1.0 if total == 0 else None),
        "rate": round(rate, 2),
        "eta_seconds": eta,
        "batches_done": meta.batches_done,
        "batches": meta.batches if meta.sealed else None,
        "retry_batches": meta.retry_batches,  # recorded too: batches_done counts them
        "created_at": meta.created_at,
        "finished_at": meta.finished_at,
        "seconds": round(end - meta.created_at, 3),
    }


def _rate(meta: JobMeta, now: float, events: list[Any]) -> float:
    """Items per second: over the job's life once it ended; while it runs, over its
    newest recorded batches up to now (so the rate falls while nothing is recorded)."""
    if meta.state is not JobState.ACTIVE:
        seconds = (meta.finished_at or now) - meta.created_at
        return meta.done / seconds if seconds > 0 else 0.0
    stamps = [int(text(entry_id).split("-")[0]) / 1000 for entry_id, f in events if b"b" in f]
    if len(stamps) < 2 or not meta.batches_done:
        seconds = now - meta.created_at
        return meta.done / seconds if seconds > 0 else 0.0
    per_batch = meta.done / meta.batches_done
    seconds = now - min(stamps)
    return (len(stamps) - 1) * per_batch / seconds if seconds > 0 else 0.0


def recent_jobs(
    r: RedisClient, queue: str, limit: int, skipped: list[Skipped] | None = None
) -> list[JobMeta]:
    """The queue's newest jobs; ids whose meta is gone are pruned from the index,
    ids and meta hashes that cannot be read are skipped."""
    skipped = [] if skipped is None else skipped
    index = QueueKeys(queue).jobs
    found = (job_id(raw, skipped) for raw in r.zrevrange(index, 0, limit - 1))
    ids = [i for i in found if i is not None]
    pipe = r.pipeline(transaction=False)
    for id_ in ids:
        pipe.hgetall(JobKeys(id_).meta)
    metas, gone = [], []
    for id_, raw in zip(ids, pipe.execute(), strict=True):
        if not raw:
            gone.append(id_)
            continue
        try:
            meta = JobMeta.parse(id_, raw)
            metas.append(lease.settle(r, meta, functools.partial(_reread, r, meta)))
        except ProtocolError as exc:
            skipped.append(Skipped("job", id_, str(exc).removeprefix(f"job {id_} ")))
    if gone:
        r.zrem(index, *gone)
    return metas


def _reread(r: RedisClient, meta: JobMeta) -> JobMeta:
    raw: Any = r.hgetall(JobKeys(meta.id).meta)
    return JobMeta.parse(meta.id, raw) if raw else meta


def matches(meta: JobMeta, states: tuple[str, ...]) -> bool:
    if not states:
        return True
    words = {meta.status}
    if meta.state is JobState.ACTIVE:
        words.add("active")
    if meta.state is JobState.FINISHED and meta.failed:
        words.add("failed")
    return bool(words & set(states))


def jobs(
    r: RedisClient,
    queues: list[str],
    limit: int,
    states: tuple[str, ...] = (),
    now: float | None = None,
    skipped: list[Skipped] | None = None,
) -> list[dict[str, Any]]:
    """The newest ``limit`` jobs of these queues in these states, newest first, with
    their rates (one more round trip, for the events of the active ones)."""
    now = server_time(r) if now is None else now
    metas: list[JobMeta] = []
    skipped = [] if skipped is None else skipped
    for queue in queues:
        if queue_name(queue, skipped) is None:
            continue
        # Filtering happens after reading: read more than the limit when filtering.
        wanted = limit if not states else max(limit * 10, 1000)
        found = recent_jobs(r, queue, wanted, skipped)
        metas += [m for m in found if matches(m, states)]
    metas.sort(key=lambda m: m.created_at, reverse=True)
    metas = metas[:limit]
    active = [m for m in metas if m.state is JobState.ACTIVE]
    pipe = r.pipeline(transaction=False)
    for meta in active:
        pipe.xrevrange(JobKeys(meta.id).events, count=RATE_EVENTS)
    events = dict(zip((m.id for m in active), pipe.execute(), strict=True))
    return [job_status(m, now, events.get(m.id)) for m in metas]


def recent_failures(
    r: RedisClient,
    job_rows: list[dict[str, Any]],
    per_job: int = 3,
    most: int = 10,
    skipped: list[Skipped] | None = None,
) -> list[dict[str, Any]]:
    """The first failed items of the newest jobs with failures (decoded safely:
    ``producer.ops.peek``), each with its job, index, error type, message and traceback."""
    skipped = [] if skipped is None else skipped
    out: list[dict[str, Any]] = []
    for row in job_rows:
        if not row["failed"] or len(out) >= most:
            continue
        raw: Any = r.hgetall(JobKeys(row["id"]).meta)
        if not raw:
            continue
        try:
            meta = JobMeta.parse(row["id"], raw)
        except ProtocolError as exc:
            skipped.append(Skipped("job", row["id"], str(exc)))
            continue
        for outcome in peek.failures(r, meta, min(per_job, most - len(out)), skipped):
            assert outcome.error is not None
            out.append(
                {
                    "job": meta.id,
                    "function": meta.function,
                    "index": outcome.index,
                    "attempts": outcome.attempts,
                    **outcome.error.as_dict(),
                }
            )
    return out


# ----------------------------------------------------------------- all of it


def unserved(queues: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[str]:
    """ "no live node serves queue Q", for each queue that active jobs wait on and
    no live node serves (``producer.listeners``)."""
    waiting: dict[str, int] = {}
    for row in rows:
        if row["status"] in ACTIVE_WORDS:
            waiting[row["queue"]] = waiting.get(row["queue"], 0) + 1
    return [
        f"{nobody_serves(q['name'])}: {waiting[q['name']]} active jobs wait on it"
        for q in queues
        if q["consumers"] == 0 and waiting.get(q["name"])
    ]


def gather(r: RedisClient, limit: int) -> dict[str, Any]:
    """Queues, the newest ``limit`` jobs of each queue, and live nodes."""
    now = server_time(r)
    skipped: list[Skipped] = []
    live = nodes(r, now, skipped)
    names = queue_names(r, skipped)
    rows: list[dict[str, Any]] = []
    for name in names:
        rows += jobs(r, [name], limit, now=now, skipped=skipped)
    queues = [queue_status(r, name, live) for name in names]
    return {
        "time": now,
        "queues": queues,
        "jobs": rows,
        "nodes": live,
        "warnings": unserved(queues, rows),
        "skipped": [s.as_dict() for s in skipped],
    }
