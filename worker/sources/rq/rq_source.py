"""RQ queues as a second source of batches for a node (``--rq-queue``).

How RQ jobs move through a node::

  rq:queue:Q --dequeue.lua--> rq:queue:Q:intermediate      (reader thread, on demand:
      the job fields too; one batch per read and queue       ``worker.sources.rq.rq_reader``)
      --> the node's Scheduler cuts it into chunks --> the pool runs
      ``rq_adapter.run_job`` on each job (the node's crash bisection and chunk
      sizing apply as to any batch)
  a chunk enters the pool    --> start.lua: executions, started registry, status
  the batch is complete      --> finish.lua (or RQ's own code): results, registries
  (both in the writer thread, ``worker.sources.rq.rq_writer``, in order), then the node
  forgets the batch.

RQ's view stays right while this happens: a job is in the intermediate list from
its dequeue to its start (as with RQ's worker), in the started registry while it
runs (its lease renewed at every node heartbeat), and recorded as RQ's worker
records it. Every Redis command about RQ goes through ``worker.sources.rq.adapter``.

Crash safety: jobs dequeued and not started yet stay in the intermediate list
if the node dies; a live node's maintenance puts them back at the head of their
queue after ``visibility_timeout`` (they never ran). Jobs that were running get
RQ's own treatment once their lease lapses: RQ's registry cleanup (which any RQ
worker, ``rq info`` or a node's maintenance triggers) fails them with
AbandonedJobError, or retries them when they have retries left.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import redis

from taskfan.errors import ConfigError
from taskfan.keys import QueueKeys
from taskfan.transient import TRANSIENT
from worker.core.batches import Batch, Completed, Delivery
from worker.node.messages import Written
from worker.sources.base import NodeParts
from worker.sources.rq import adapter as rqa
from worker.sources.rq.rq_reader import RqReader
from worker.sources.rq.rq_writer import (
    AbandonBatch,
    FinishBatch,
    ReleaseBatches,
    RqBooks,
    RqWriter,
    StartJobs,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RqQueueRef(QueueKeys):
    """An RQ queue where a Delivery names its queue (it has no taskfan stream)."""

    def __post_init__(self) -> None:
        pass  # RQ's names, not taskfan's rules

    @property
    def stream(self) -> str:
        raise TypeError(f"RQ queue {self.name} has no taskfan stream")


class RqSource:
    """RQ queues as a ``worker.sources.base.Source``: batches of RQ jobs, read by
    ``RqReader``, recorded by ``RqWriter``, leases renewed from the heartbeat,
    and a maintenance thread of its own."""

    def __init__(self, parts: NodeParts) -> None:
        rqa.check_version()
        settings = parts.settings
        client = parts.node_redis.client
        if not isinstance(client, redis.Redis):
            raise ConfigError(
                "RQ queues (--rq-queue) need one Redis server or a Sentinel master: "
                "RQ does not run on a Redis Cluster"
            )
        self.settings = settings
        self.events = parts.events
        self.stats = parts.stats
        self.sizer = parts.sizer
        #: an RQ job's own function is checked against --allow by the runner itself
        #: (``rqa.run_job``): the pool checks nothing of the runner's
        self.allow: tuple[str, ...] = ()
        # A pool of its own: RQ's worker object renames its connection (CLIENT SETNAME).
        pool = client.connection_pool
        self.client = redis.Redis(
            connection_pool=redis.ConnectionPool(
                connection_class=pool.connection_class, **pool.connection_kwargs
            )
        )
        self.names = list(settings.rq_queues)
        self.keys = {name: rqa.QueueKeys(name) for name in self.names}
        self.refs = {name: RqQueueRef(name) for name in self.names}
        self.serializer_name = settings.rq_serializer
        rqa.check_trust(
            settings.rq_serializer,
            bool(settings.secrets),
            settings.no_pickle,
            trusted=settings.rq_serializer_trusted,
        )
        ttl = max(60, int(3 * settings.heartbeat_interval))
        self.worker = rqa.RqWorker(
            self.client, parts.node_id, self.names, self.serializer_name, ttl
        )
        self.lease = max(1, round(settings.visibility_timeout))
        self.closed = threading.Event()
        self.books = RqBooks(held={name: set() for name in self.names})
        self.writer = RqWriter(
            self.client, self.worker, self.keys, self.books, self._recorded, self.lease
        )
        self.reader = RqReader(
            self.client, settings, self.refs, self.books, self.writer, self.sizer,
            parts.events, self,
        )  # fmt: skip
        self._scheduler = (
            rqa.Scheduler(self.client, self.names, self.serializer_name)
            if settings.rq_with_scheduler
            else None
        )

    # ----------------------------------------------------------------- node-facing

    def labels(self) -> list[str]:
        return [f"rq:{name}" for name in self.names]

    def record_fields(self) -> Mapping[str, str]:
        return {"rq_queues": json.dumps(self.names)}

    def owns(self, delivery: Delivery) -> bool:
        return isinstance(delivery.queue, RqQueueRef)

    def prepare(self) -> None:
        """Check Redis, load the scripts' owner, register as an RQ worker."""
        rqa.check_server(self.client)
        self.worker.register()
        if self._scheduler is not None:
            self._scheduler.start()
        log.info("draining RQ queues %s as RQ worker %s", ",".join(self.names), self.worker.name)

    def threads(self) -> list[tuple[str, Callable[[], None]]]:
        return [
            ("rq-reader", self.reader.run),
            ("rq-writer", self.writer.run),
            ("rq-maintenance", self._maintain_loop),
        ]

    def request(self, batches: int) -> None:
        """Read about ``batches`` batches' worth of jobs."""
        self.reader.request(batches)

    def arrived(self, entries: Sequence[Delivery]) -> list[Delivery]:
        """Its reads carry batches, not entries: nothing to hold here (the reader
        put their jobs in its books)."""
        return list(entries)

    def started(self, delivery: Delivery, lo: int, hi: int) -> None:
        """A chunk of a batch entered the pool: record its jobs' start (once each)."""
        with self.books.lock:
            batch = self.books.batches.get(delivery.entry_id)
        if batch is None or hi <= batch.requested:
            return  # a re-run (crash bisection): started already
        jobs = batch.jobs[max(lo, batch.requested) : hi]
        batch.requested = max(batch.requested, hi)
        if jobs:
            self.writer.put(StartJobs(batch.queue, jobs))

    def complete(self, completed: Completed, batch: Batch | None) -> None:
        """Every job of the batch has an outcome: record them (the writer), then
        tell the node (``Written``, with the jobs recorded as done and failed)."""
        blobs = batch.blobs if batch else {}
        self.writer.put(FinishBatch(completed.delivery, dict(blobs)))

    def _recorded(self, delivery: Delivery, ok: int, failed: int) -> None:
        """From the writer thread: a batch is recorded."""
        self.events.put(Written(self, Completed.counted(delivery, ok, failed)))

    def written(self, completed: Completed) -> None:
        """The node got the writer's ``Written``: count the batch."""
        queue = f"rq:{completed.delivery.queue.name}"
        self.stats.batch(queue, rqa.RUN_JOB, completed.ok, completed.failed)

    def give_back(self, delivery: Delivery) -> None:
        """Another node should run it: its jobs go back to the queue's head."""
        self.hand_back([delivery])

    def hand_back(self, deliveries: Sequence[Delivery]) -> None:
        """Batches the node will not start: their jobs go back to the queue head."""
        self.writer.put(ReleaseBatches(list(deliveries)))

    def stop_reading(self) -> None:
        self.reader.stop_reading()

    def close(self, cold: bool, held: Sequence[Batch]) -> None:
        """Stop the threads. On a cold stop, the batches ``held`` are settled:
        what ran is recorded, what was running fails (RQ's failure path: retries
        apply), what never started goes back to the queue."""
        self.stop_reading()
        if cold:
            for batch in held:
                self.writer.put(AbandonBatch(batch.delivery, dict(batch.blobs)))
        self.writer.close()
        self.reader.close()
        self.closed.set()

    def after_threads(self, late: Sequence[Delivery]) -> None:
        """Once the threads are done: hand back reads that came too late, leave."""
        try:
            if late:
                self.writer.release(late)
            if self._scheduler is not None:
                self._scheduler.stop()
            self.worker.unregister()
        except TRANSIENT as exc:
            log.warning("could not unregister RQ worker %s: %s", self.worker.name, exc)
        self.client.close()

    # ----------------------------------------------------------------- heartbeat

    def beat(self) -> None:
        """From the node's heartbeat: renew leases of started jobs, keep held ones
        from looking stuck, renew the worker's registration."""
        with self.books.lock:
            running = list(self.books.running.values())
            held = {name: sorted(ids) for name, ids in self.books.held.items() if ids}
        now = time.time()
        by_queue: dict[str, list[rqa.RqJob]] = {}
        for job in running:
            by_queue.setdefault(job.queue, []).append(job)
        for name, jobs in by_queue.items():
            codes = rqa.refresh(self.client, self.keys[name], jobs, self.lease, now)
            for job, code in zip(jobs, codes, strict=True):
                if not code:
                    log.warning(
                        "RQ job %s (queue %s): its started-registry entry is gone (its lease "
                        "lapsed?); its outcome will not be recorded",
                        job.id,
                        name,
                    )
        for name, ids in held.items():
            rqa.keep_held(self.client, self.keys[name], ids)
        self.worker.heartbeat(running[-1].id if running else None)

    # ----------------------------------------------------------------- maintenance

    def _maintain_loop(self) -> None:
        interval = self.settings.visibility_timeout
        next_clean = 0.0
        while not self.closed.is_set():
            try:
                if self._scheduler is not None:
                    self._scheduler.tick()
                if time.monotonic() >= next_clean:
                    next_clean = time.monotonic() + interval
                    self._maintain()
            except TRANSIENT as exc:
                log.warning("RQ maintenance failed: %s", exc)
            except Exception:
                log.exception("RQ maintenance failed")
            self.closed.wait(1.0)

    def _maintain(self) -> None:
        with self.books.lock:
            own = {name: set(ids) for name, ids in self.books.held.items()}
        for name in self.names:
            requeued = rqa.recover_stuck(
                self.client,
                self.keys[name],
                self.settings.visibility_timeout,
                own[name],
                time.time(),
            )
            if requeued:
                log.warning(
                    "RQ queue %s: %d jobs dequeued by a node or worker that died before "
                    "starting them went back to the queue",
                    name,
                    requeued,
                )
            rqa.clean(self.client, name, self.serializer_name)
