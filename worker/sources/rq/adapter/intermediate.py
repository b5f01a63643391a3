"""Jobs between an RQ queue and their start: taken from the queue into its
intermediate list with their hash fields (``dequeue``, dequeue.lua), held there
while they wait in the node (``keep_held``), given back to the queue's head
(``release``, release.lua) or dropped when their hash is gone (``drop``); and
``rq suspend`` (``suspended``), which holds dequeues back.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from worker.sources.rq.adapter.jobs import FETCHED
from worker.sources.rq.adapter.keys import SUSPENDED, QueueKeys
from worker.sources.rq.adapter.scripts import DEQUEUE, PRELUDE, RELEASE, SCRIPT_JOBS, run

#: the lengths that open each job in dequeue.lua's reply: its id's, then its fields'
_LENGTHS = struct.Struct(f">{1 + len(FETCHED)}i")


def dequeue(
    client: redis.Redis, keys: QueueKeys, count: int, moved: Sequence[str] = ()
) -> list[tuple[str, tuple[bytes | None, ...] | None]]:
    """Move up to ``count`` job ids from the queue to its intermediate list; returns
    them (after ``moved``, ids moved already) with the FETCHED fields of their hash,
    or None for a job whose hash is gone (its id left the intermediate list)."""
    found: list[tuple[str, tuple[bytes | None, ...] | None]] = []
    while True:
        step = min(count, SCRIPT_JOBS)
        args: list[Any] = [*PRELUDE, step, len(moved), *moved, *FETCHED]
        got = _unpack(run(client, DEQUEUE, [keys.queue, keys.intermediate], args))
        found += got
        count -= step
        if count <= 0 or len(got) < step + len(moved):
            return found  # done, or the queue ran dry
        moved = ()


def _unpack(blob: bytes) -> list[tuple[str, tuple[bytes | None, ...] | None]]:
    """dequeue.lua's reply: per job, the lengths of its id and of each field (-1:
    missing), then the id and the fields present; a job without data is gone."""
    out: list[tuple[str, tuple[bytes | None, ...] | None]] = []
    unpack_from, head = _LENGTHS.unpack_from, _LENGTHS.size
    at, end = 0, len(blob)
    while at < end:
        id_length, *lengths = unpack_from(blob, at)
        at += head
        job_id = blob[at : at + id_length].decode()
        at += id_length
        if lengths[0] < 0:
            out.append((job_id, None))
            continue
        fields: list[bytes | None] = []
        for length in lengths:
            if length < 0:
                fields.append(None)
            else:
                fields.append(blob[at : at + length])
                at += length
        out.append((job_id, tuple(fields)))
    return out


def dequeue_blocking(client: redis.Redis, keys: QueueKeys, timeout: float) -> str | None:
    """Wait up to ``timeout`` seconds for one job id (BLMOVE, as RQ's Queue.lmove);
    ``dequeue(..., moved=[it])`` then reads its fields."""
    seconds: Any = timeout  # redis-py's hint says int; Redis takes fractions
    found: Any = client.blmove(keys.queue, keys.intermediate, seconds, "LEFT", "RIGHT")
    return found.decode() if found is not None else None


def suspended(client: redis.Redis) -> bool:
    """``rq suspend`` is in force: RQ's workers take no new jobs, and neither do we."""
    return bool(client.exists(SUSPENDED))


def drop(client: redis.Redis, keys: QueueKeys, ids: Iterable[str]) -> None:
    """Take ids of jobs that no longer exist out of the intermediate list."""
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.lrem(keys.intermediate, 1, job_id)
    pipe.execute()


def keep_held(client: redis.Redis, keys: QueueKeys, ids: Sequence[str]) -> None:
    """The lease of dequeued jobs not started yet: clear the markers that RQ's
    intermediate-list cleanup (and ``recover_stuck``) set on jobs they see there."""
    for at in range(0, len(ids), 1000):
        client.delete(*(keys.first_seen(i) for i in ids[at : at + 1000]))


def release(client: redis.Redis, keys: QueueKeys, ids: Sequence[str]) -> int:
    """Put dequeued, never started jobs back at the head of their queue, in order."""
    if not ids:
        return 0
    script_keys = [keys.queue, keys.intermediate, *(keys.first_seen(i) for i in ids)]
    return int(run(client, RELEASE, script_keys, list(ids)))
