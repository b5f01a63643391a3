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

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from taskfan.keys import QueueKeys
from taskfan.settings import Settings
from taskfan.transient import TRANSIENT
from worker.core.batches import Delivery
from worker.core.chunk_sizing import ChunkSizer
from worker.core.scheduler import Batch
from worker.node.messages import Events, RqRead, RqWritten
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

if TYPE_CHECKING:
    from worker.services.stats import NodeStats

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
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        node_id: str,
        events: Events,
        sizer: ChunkSizer,
    ) -> None:
        rqa.check_version()
        self.settings = settings
        self.events = events
        self.sizer = sizer
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
        self.worker = rqa.RqWorker(self.client, node_id, self.names, self.serializer_name, ttl)
        self.lease = max(1, round(settings.visibility_timeout))
        self.reading = False
        self.last_read_empty = False
        self.closed = threading.Event()
        self.books = RqBooks(held={name: set() for name in self.names})
        self.writer = RqWriter(self.client, self.worker, self.keys, self.books, events, self.lease)
        self.reader = RqReader(
            self.client, settings, self.refs, self.books, self.writer, sizer, events
        )
        self._scheduler = (
            rqa.Scheduler(self.client, self.names, self.serializer_name)
            if settings.rq_with_scheduler
            else None
        )

    # ----------------------------------------------------------------- node-facing

    def owns(self, delivery: Delivery) -> bool:
        return isinstance(delivery.queue, RqQueueRef)

    def prepare(self) -> None:
        """Check Redis, load the scripts' owner, register as an RQ worker."""
        rqa.check_server(self.client)
        self.worker.register()
        if self._scheduler is not None:
            self._scheduler.start()
        log.info("draining RQ queues %s as RQ worker %s", ",".join(self.names), self.worker.name)

    def threads(self) -> list[tuple[str, Any]]:
        return [
            ("rq-reader", self.reader.run),
            ("rq-writer", self.writer.run),
            ("rq-maintenance", self._maintain_loop),
        ]

    def request(self, batches: int) -> None:
        """Read about ``batches`` batches' worth of jobs (no-op while a read is out)."""
        if self.reading:
            return
        self.reading = True
        self.reader.request(batches)

    def on_read(self, event: RqRead, have_batches: bool) -> list[Batch]:
        """The node got the reader's ``RqRead``: the batches for its scheduler
        (``Scheduler.admit``)."""
        self.reading = False
        self.last_read_empty = event.found_nothing and not have_batches
        return list(event.batches)

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

    def complete(self, delivery: Delivery, blobs: dict[int, bytes]) -> None:
        """Every job of the batch has an outcome: record them, then post
        ``RqWritten(delivery, ok, failed)``."""
        self.writer.put(FinishBatch(delivery, dict(blobs)))

    def count(self, stats: NodeStats, event: RqWritten) -> None:
        """The node got the writer's ``RqWritten``: count the batch."""
        stats.batch(f"rq:{event.delivery.queue.name}", rqa.RUN_JOB, event.ok, event.failed)

    def hand_back(self, deliveries: Sequence[Delivery]) -> None:
        """Batches the node will not start: their jobs go back to the queue head."""
        self.writer.put(ReleaseBatches(list(deliveries)))

    def stop_reading(self) -> None:
        self.reader.stop_reading()

    def close(self, cold: bool, unfinished: Sequence[tuple[Delivery, dict[int, bytes]]]) -> None:
        """Stop the threads. On a cold stop, ``unfinished`` batches are settled:
        what ran is recorded, what was running fails (RQ's failure path: retries
        apply), what never started goes back to the queue."""
        self.stop_reading()
        if cold:
            for delivery, blobs in unfinished:
                self.writer.put(AbandonBatch(delivery, dict(blobs)))
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
