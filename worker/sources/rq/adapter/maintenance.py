"""RQ's periodic upkeep, done by a node as by RQ's workers: jobs stuck in an
intermediate list go back to their queue (``recover_stuck``), RQ's registry
cleanup (``clean``), and, with ``--rq-with-scheduler``, RQ's scheduler duty
(``Scheduler``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from rq import worker_registration
from rq.queue import Queue
from rq.registry import clean_registries
from rq.scheduler import RQScheduler

from worker.sources.rq.adapter.checks import serializer
from worker.sources.rq.adapter.intermediate import release
from worker.sources.rq.adapter.keys import QueueKeys, job_key
from worker.sources.rq.adapter.versions import clean_groups


def recover_stuck(
    client: redis.Redis, keys: QueueKeys, grace: float, own: set[str], now: float
) -> int:
    """Requeue jobs stuck in the intermediate list: dequeued by a node (or RQ
    worker) that died before starting them. Returns how many went back.

    RQ's own cleanup (IntermediateQueue.cleanup) marks a job the first time it
    sees it there and fails it ("stuck in intermediate queue") a minute later;
    we use the same marker but put the job back, since it never ran. A live node
    clears the markers of the jobs it holds at every heartbeat (``keep_held``).
    """
    listed: Any = client.lrange(keys.intermediate, 0, -1)
    ids = [i.decode() for i in listed]
    if not ids:
        return 0
    members: Any = client.zrange(keys.started, 0, -1)
    running = {m.decode().split(":", 1)[0] for m in members}
    stuck = []
    for job_id in dict.fromkeys(ids):
        if job_id in running or job_id in own:
            continue
        if not client.exists(job_key(job_id)):
            client.lrem(keys.intermediate, 1, job_id)  # as RQ's cleanup does
            continue
        if client.set(keys.first_seen(job_id), now, nx=True, ex=24 * 3600):
            continue  # first seen now
        first = client.get(keys.first_seen(job_id))
        if first is not None and now - float(first) > grace:
            stuck.append(job_id)
    return release(client, keys, stuck)


def clean(client: redis.Redis, name: str, serializer_name: str | None) -> None:
    """RQ's periodic maintenance of a queue (BaseWorker.clean_registries): expired
    finished/failed entries go, jobs whose lease lapsed in the started registry fail
    with AbandonedJobError (or are retried), dead workers leave the registry. One
    worker or node at a time, under RQ's maintenance lock."""
    queue = Queue(name, connection=client, serializer=serializer(serializer_name))
    if not queue.acquire_maintenance_lock():
        return
    try:
        clean_registries(queue)
        worker_registration.clean_worker_registry(queue)
    finally:
        queue.release_maintenance_lock()
    clean_groups(client)


class Scheduler:
    """RQ's scheduler duty (``rq worker --with-scheduler``): move due jobs of the
    scheduled registries (e.g. retries with an interval) to their queues."""

    def __init__(self, client: redis.Redis, queues: Sequence[str], serializer_name: str | None):
        self._scheduler = RQScheduler(
            list(queues), connection=client, serializer=serializer(serializer_name)
        )

    def start(self) -> None:
        self._scheduler.register_birth()
        self._scheduler.acquire_locks()

    def tick(self) -> None:
        scheduler = self._scheduler
        if scheduler.should_reacquire_locks:
            scheduler.acquire_locks()
        if scheduler.acquired_locks:
            scheduler.heartbeat()
            scheduler.enqueue_scheduled_jobs()

    def stop(self) -> None:
        self._scheduler.stop()
