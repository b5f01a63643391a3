"""A queue's backlog in items: waiting and in flight, for autoscalers.

Batches hold from 1 to 25,000 items, so a count of stream entries says little
about the work left. Both numbers here are derived, at each heartbeat of a node
serving metrics, from records that other writers already keep exact; nothing new
is written on the hot path, so nothing can drift:

- items outstanding in a queue: for each job in the queue's index (``jobs``
  zset, at most ``producer.records.JOBS_INDEXED``) that is ``active``, ``total``
  (items enqueued so far; it grows while an unsealed job is being sent) minus
  ``ok`` and ``failed`` (which ``record.lua`` moves atomically with the results;
  a retry round that opens takes its items out of ``failed`` again);
- items in flight: what the live nodes hold, from the field ``held_items`` of
  their records (JSON: queue -> items of the batches held), which expire with
  the node (three heartbeats after it dies);
- items waiting: outstanding minus in flight (never below 0). A batch of a dead
  node counts as in flight until its record expires, then as waiting until
  another node reclaims it.

Cost: two round trips per heartbeat, one ZRANGE per queue and one per node
list, then one HMGET per indexed job and per node.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from taskfan import keys
from taskfan.connection import RedisClient
from taskfan.keys import JobKeys, QueueKeys

#: the node record's field with the items held per queue
HELD_FIELD = "held_items"
#: jobs read per queue, newest first: the size producers keep the index at
#: (``producer.records.JOBS_INDEXED``), so a forged index cannot make it larger
MAX_JOBS = 10_000
#: node records read
MAX_NODES = 10_000


def held_items(queue_counts: Iterable[tuple[str, int]]) -> str:
    """The node record's ``held_items``: JSON, queue name -> items held."""
    out: dict[str, int] = {}
    for queue, count in queue_counts:
        out[queue] = out.get(queue, 0) + count
    return json.dumps(out, sort_keys=True)


def _held(raw: Any) -> dict[str, int]:
    """A node record's ``held_items``; anything unreadable counts as nothing."""
    try:
        parsed = json.loads(raw) if raw is not None else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {str(q): n for q, n in parsed.items() if isinstance(n, int) and 0 <= n < 2**53}


def _number(raw: Any) -> int:
    try:
        return max(0, int(raw))
    except (TypeError, ValueError):
        return 0


def sample(client: RedisClient, queues: Sequence[QueueKeys]) -> dict[str, tuple[int, int]]:
    """Per queue: (items waiting, items in flight)."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.zrange(queue.jobs, -MAX_JOBS, -1)  # the newest
    pipe.zrange(keys.NODES, -MAX_NODES, -1)  # the latest heartbeats
    *indexes, listed = pipe.execute(raise_on_error=False)
    pipe = client.pipeline(transaction=False)
    counted: list[int] = []
    for index in indexes:
        job_ids = index if isinstance(index, list) else []
        valid = 0
        for raw in job_ids:
            try:
                pipe.hmget(
                    JobKeys(raw.decode("utf-8", "replace")).meta, "state", "total", "ok", "failed"
                )
            except ValueError:  # not a job id: someone else wrote it
                continue
            valid += 1
        counted.append(valid)
    node_count = 0
    for raw in listed if isinstance(listed, list) else []:
        try:
            pipe.hmget(keys.node(raw.decode("utf-8", "replace")), HELD_FIELD, "heartbeat_at")
        except ValueError:
            continue
        node_count += 1
    replies = pipe.execute(raise_on_error=False)
    in_flight: dict[str, int] = {}
    for reply in replies[len(replies) - node_count :]:
        if isinstance(reply, list) and reply[1] is not None:  # else the node is gone
            for name, n in _held(reply[0]).items():
                in_flight[name] = in_flight.get(name, 0) + n
    out: dict[str, tuple[int, int]] = {}
    at = 0
    for queue, valid in zip(queues, counted, strict=True):
        outstanding = 0
        for reply in replies[at : at + valid]:
            if isinstance(reply, list) and reply[0] == b"active":
                outstanding += max(0, _number(reply[1]) - _number(reply[2]) - _number(reply[3]))
        at += valid
        flying = in_flight.get(queue.name, 0)
        out[queue.name] = (max(0, outstanding - flying), flying)
    return out
