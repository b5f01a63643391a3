"""The RQ source's reader thread: RQ jobs, dequeued in batches when the node asks.

A read takes up to (batches asked) x (jobs per batch) jobs, queues in priority
order: ``dequeue.lua`` moves them to each queue's intermediate list and reads
the fields the node needs, one script call per 250 jobs. Jobs whose hash is gone
are dropped, jobs taskfan does not run go to the writer to fail, and the rest
become one ``worker.core.scheduler.Batch`` per queue, posted to the node as
``Read(source, batches=..., found=...)`` (``worker.node.messages``). When every
queue is empty the read blocks (BLMOVE) on the first queue: ``block_seconds`` with one queue, else
``POLL_SECONDS`` before the others are looked at again. ``rq suspend`` holds
reads back.

A batch aims at ``BATCH_SECONDS`` of work by the jobs' measured cost (at most
``MAX_BATCH`` jobs; before a measurement, as many as the node has processes), so
a node holds little more than it runs, whatever the jobs cost.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

import redis

from taskfan.options import CallMode
from taskfan.protocol import BatchEntry
from taskfan.settings import Settings
from taskfan.transient import TRANSIENT, Backoff
from worker.core.batches import Delivery
from worker.core.chunk_sizing import ChunkSizer
from worker.core.scheduler import Batch
from worker.node.messages import Events, Read
from worker.sources.on_demand import OnDemand
from worker.sources.rq import adapter as rqa
from worker.sources.rq.rq_writer import FailUnsupported, RqBatch, RqBooks, RqWriter

if TYPE_CHECKING:
    from worker.sources.base import Source

log = logging.getLogger(__name__)

#: seconds of work an RQ batch aims at, once the jobs' cost is measured ...
BATCH_SECONDS = 0.25
#: ... and the most jobs in one
MAX_BATCH = 1000
#: how often an idle node with several RQ queues looks at the ones after the first
POLL_SECONDS = 0.2


class RqReader(OnDemand):
    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        refs: dict[str, Any],
        books: RqBooks,
        writer: RqWriter,
        sizer: ChunkSizer,
        events: Events,
        source: Source,
    ) -> None:
        super().__init__()
        #: the source its reads answer for (``Read.source``)
        self.source = source
        self.client = client
        self.settings = settings
        self.names = list(settings.rq_queues)
        self.keys = {name: rqa.QueueKeys(name) for name in self.names}
        self.refs = refs
        self.books = books
        self.writer = writer
        self.sizer = sizer
        self.events = events
        self.serializer_name = settings.rq_serializer
        #: the modules RQ jobs may call functions from (--allow); (): any
        self.allow = settings.allow
        # Blocking reads get a connection of their own, which CLIENT UNBLOCK can cut short.
        self._blocking = redis.Redis(
            connection_pool=client.connection_pool, single_connection_client=True
        )
        self._blocking_id: int | None = None
        self._ids = itertools.count(1)

    def interrupt(self) -> None:
        blocking_id = self._blocking_id
        if blocking_id is not None:
            with contextlib.suppress(redis.RedisError):
                self.client.client_unblock(blocking_id)

    def run(self) -> None:
        backoff = Backoff()
        while (want := self.next_demand()) is not None:
            found: list[Batch] | None = None
            try:
                if not self.stopping.is_set():
                    found = self._read(want * self._batch_size())
                backoff.reset()
            except TRANSIENT as exc:
                self._blocking_id = None
                if not self.stopping.is_set():
                    log.warning(
                        "reading RQ queues failed, retrying in %.1fs: %s", backoff.delay, exc
                    )
                backoff.wait(self.closed)
            except Exception:  # never let the reader die: the node would hang
                log.exception("reading RQ queues failed, retrying in %.1fs", backoff.delay)
                backoff.wait(self.closed)
            self.events.put(Read(self.source, batches=found or [], found=found is not None))

    def _batch_size(self) -> int:
        cost = self.sizer.cost(rqa.RUN_JOB)
        processes = self.settings.processes
        if cost is None:
            return processes  # small until measured, so slow jobs do not pile up here
        if cost <= 0:
            return MAX_BATCH
        return max(processes, min(MAX_BATCH, int(BATCH_SECONDS / cost)))

    def _read(self, count: int) -> list[Batch] | None:
        """Dequeue up to ``count`` jobs, queues in priority order; block a while when
        all are empty. Returns one batch per queue that gave jobs to run, or None
        when there were none to dequeue."""
        if rqa.suspended(self.client):
            self.closed.wait(1.0)  # `rq suspend`: take nothing, look again soon
            return None
        out = []
        dequeued = False
        for name in self.names:
            found = rqa.dequeue(self.client, self.keys[name], count)
            if found:
                dequeued = True
                batch = self._batch(name, found)
                if batch is not None:
                    out.append(batch)
                count -= len(found)
                if count <= 0:
                    break
        if dequeued:
            return out
        first = self.names[0]
        timeout = self.settings.block_seconds if len(self.names) == 1 else POLL_SECONDS
        if self._blocking_id is None:
            self._blocking_id = int(self._blocking.client_id())
        try:
            job_id = rqa.dequeue_blocking(self._blocking, self.keys[first], timeout)
        except redis.ResponseError as exc:
            if str(exc).startswith("UNBLOCKED"):
                return None
            raise
        if job_id is None:
            return None
        found = rqa.dequeue(self.client, self.keys[first], count - 1, moved=[job_id])
        batch = self._batch(first, found)
        return [batch] if batch is not None else []

    def _batch(
        self, name: str, found: list[tuple[str, tuple[bytes | None, ...] | None]]
    ) -> Batch | None:
        """A batch of the jobs to run, or None if none is (gone or unsupported)."""
        jobs = [rqa.describe(name, job_id, fields) for job_id, fields in found if fields]
        if len(jobs) < len(found):  # expired before they started (their `ttl`), or deleted
            log.info("RQ queue %s: %d dequeued jobs no longer exist", name, len(found) - len(jobs))
        unsupported = [job for job in jobs if job.unsupported]
        if unsupported:
            self.writer.put(FailUnsupported(unsupported))
            jobs = [job for job in jobs if not job.unsupported]
        if not jobs:
            return None
        entry_id = f"rq-{next(self._ids)}".encode()
        entry = BatchEntry(
            job_id=f"rq:{name}",
            index=int(entry_id[3:]),
            start=0,
            count=len(jobs),
            fn_ref=rqa.RUN_JOB,
            codec="pickle",  # of the chunks' results, from the pool processes only
            mode=CallMode.ONE,
            chunksize=0,
            payload=b"",
        )
        delivery = Delivery(self.refs[name], entry_id, None)
        items = [job.item(self.serializer_name, self.allow) for job in jobs]
        with self.books.lock:
            self.books.batches[entry_id] = RqBatch(delivery, name, jobs)
            self.books.held[name].update(job.id for job in jobs)
        return Batch(delivery, entry, items, time.monotonic(), remaining=len(jobs))
