"""RQ queues as a second source of batches for a node (``--rq-queue``).

How RQ jobs move through a node::

  rq:queue:Q --dequeue.lua--> rq:queue:Q:intermediate      (reader thread, on demand)
      HGETALL each job, then one Delivery per read and queue: a batch of RQ jobs
      --> the node's Scheduler cuts it into chunks --> the pool runs
      ``rq_adapter.run_job`` on each job (the node's crash bisection and chunk
      sizing apply as to any batch)
  a chunk enters the pool    --> start.lua: executions, started registry, status
  the batch is complete      --> finish.lua (or RQ's own code): results, registries
  (both in the writer thread, in order), then the node forgets the batch.

RQ's view stays right while this happens: a job is in the intermediate list from
its dequeue to its start (as with RQ's worker), in the started registry while it
runs (its lease renewed at every node heartbeat), and recorded as RQ's worker
records it. Every Redis command about RQ goes through ``worker.rq_adapter``.

Crash safety: jobs dequeued and not started yet stay in the intermediate list
if the node dies; a live node's maintenance puts them back at the head of their
queue after ``visibility_timeout`` (they never ran). Jobs that were running get
RQ's own treatment once their lease lapses: RQ's registry cleanup (which any RQ
worker, ``rq info`` or a node's maintenance triggers) fails them with
AbandonedJobError, or retries them when they have retries left.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import pickle
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from taskfan.keys import QueueKeys
from taskfan.protocol import BatchEntry, CallMode
from taskfan.settings import Settings
from worker import rq_adapter as rqa
from worker.io_threads import REDIS_ERRORS, Backoff
from worker.redis_io import Delivery
from worker.scheduler import Batch
from worker.sizing import ChunkSizer

if TYPE_CHECKING:
    from worker.stats import NodeStats

log = logging.getLogger(__name__)
Events = queue.Queue[tuple[Any, ...]]

#: seconds of work an RQ batch aims at, once the jobs' cost is measured ...
BATCH_SECONDS = 0.25
#: ... and the most jobs in one
MAX_BATCH = 1000
#: how often an idle node with several RQ queues looks at the ones after the first
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class RqQueueRef(QueueKeys):
    """An RQ queue where a Delivery names its queue (it has no taskfan stream)."""

    def __post_init__(self) -> None:
        pass  # RQ's names, not taskfan's rules

    @property
    def stream(self) -> str:
        raise TypeError(f"RQ queue {self.name} has no taskfan stream")


@dataclass(eq=False)
class RqBatch:
    delivery: Delivery
    queue: str
    jobs: list[rqa.RqJob]
    #: how many jobs from the front were sent to the pool (start requested)
    requested: int = 0


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
        self._blocking = redis.Redis(
            connection_pool=self.client.connection_pool, single_connection_client=True
        )
        self._blocking_id: int | None = None
        self.names = list(settings.rq_queues)
        self.keys = {name: rqa.QueueKeys(name) for name in self.names}
        self.refs = {name: RqQueueRef(name) for name in self.names}
        self.serializer_name = settings.rq_serializer
        #: the modules RQ jobs may call functions from (--allow); (): any
        self.allow = settings.allow
        rqa.check_trust(settings.rq_serializer, bool(settings.secrets), settings.no_pickle)
        ttl = max(60, int(3 * settings.heartbeat_interval))
        self.worker = rqa.RqWorker(self.client, node_id, self.names, self.serializer_name, ttl)
        self.lease = max(1, round(settings.visibility_timeout))
        self.reading = False
        self.last_read_empty = False
        self.closed = threading.Event()
        self._stopping = threading.Event()
        self._demand = 0
        self._cond = threading.Condition()
        self._ops: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._batches: dict[bytes, RqBatch] = {}
        self._held: dict[str, set[str]] = {name: set() for name in self.names}  #: not started
        self._running: dict[str, rqa.RqJob] = {}  #: started, by execution member
        self._ids = itertools.count(1)
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
            ("rq-reader", self._read_loop),
            ("rq-writer", self._write_loop),
            ("rq-maintenance", self._maintain_loop),
        ]

    def request(self, batches: int) -> None:
        """Read about ``batches`` batches' worth of jobs (no-op while a read is out)."""
        if self.reading:
            return
        self.reading = True
        with self._cond:
            self._demand = batches
            self._cond.notify()

    def on_read(self, event: tuple[Any, ...], have_batches: bool) -> list[Batch]:
        """The node got ("rq-read", batches, found_nothing): the batches for its
        scheduler (``Scheduler.admit``)."""
        _, batches, found_nothing = event
        self.reading = False
        self.last_read_empty = found_nothing and not have_batches
        return list(batches)

    def started(self, delivery: Delivery, lo: int, hi: int) -> None:
        """A chunk of a batch entered the pool: record its jobs' start (once each)."""
        with self._lock:
            batch = self._batches.get(delivery.entry_id)
        if batch is None or hi <= batch.requested:
            return  # a re-run (crash bisection): started already
        jobs = batch.jobs[max(lo, batch.requested) : hi]
        batch.requested = max(batch.requested, hi)
        if jobs:
            self._ops.put(("start", batch.queue, jobs))

    def complete(self, delivery: Delivery, blobs: dict[int, bytes]) -> None:
        """Every job of the batch has an outcome: record them, then post
        ("rq-written", delivery, ok, failed)."""
        self._ops.put(("finish", delivery, dict(blobs)))

    def count(self, stats: NodeStats, event: tuple[Any, ...]) -> None:
        """The node got ("rq-written", delivery, ok, failed): count the batch."""
        _, delivery, ok, failed = event
        stats.batch(f"rq:{delivery.queue.name}", rqa.RUN_JOB, ok, failed)

    def hand_back(self, deliveries: Sequence[Delivery]) -> None:
        """Batches the node will not start: their jobs go back to the queue head."""
        self._ops.put(("release", list(deliveries)))

    def stop_reading(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        blocking_id = self._blocking_id
        if blocking_id is not None:
            with contextlib.suppress(redis.RedisError):
                self.client.client_unblock(blocking_id)

    def close(self, cold: bool, unfinished: Sequence[tuple[Delivery, dict[int, bytes]]]) -> None:
        """Stop the threads. On a cold stop, ``unfinished`` batches are settled:
        what ran is recorded, what was running fails (RQ's failure path: retries
        apply), what never started goes back to the queue."""
        self.stop_reading()
        if cold:
            for delivery, blobs in unfinished:
                self._ops.put(("abandon", delivery, dict(blobs)))
        self._ops.put(None)
        self.closed.set()
        with self._cond:
            self._cond.notify_all()

    def after_threads(self, late: Sequence[Delivery]) -> None:
        """Once the threads are done: hand back reads that came too late, leave."""
        try:
            if late:
                self._release(late)
            if self._scheduler is not None:
                self._scheduler.stop()
            self.worker.unregister()
        except REDIS_ERRORS as exc:
            log.warning("could not unregister RQ worker %s: %s", self.worker.name, exc)
        self.client.close()

    # ----------------------------------------------------------------- heartbeat

    def beat(self) -> None:
        """From the node's heartbeat: renew leases of started jobs, keep held ones
        from looking stuck, renew the worker's registration."""
        with self._lock:
            running = list(self._running.values())
            held = {name: sorted(ids) for name, ids in self._held.items() if ids}
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

    # ----------------------------------------------------------------- reader

    def _read_loop(self) -> None:
        backoff = Backoff()
        while True:
            with self._cond:
                while not self._demand and not self.closed.is_set():
                    self._cond.wait()
                if self.closed.is_set():
                    return
                want, self._demand = self._demand, 0
            found: list[Batch] | None = None
            try:
                if not self._stopping.is_set():
                    found = self._read(want * self._batch_size())
                backoff.reset()
            except REDIS_ERRORS as exc:
                self._blocking_id = None
                if not self._stopping.is_set():
                    log.warning(
                        "reading RQ queues failed, retrying in %.1fs: %s", backoff.delay, exc
                    )
                backoff.wait(self.closed)
            except Exception:  # never let the reader die: the node would hang
                log.exception("reading RQ queues failed, retrying in %.1fs", backoff.delay)
                backoff.wait(self.closed)
            self.events.put(("rq-read", found or [], found is None))

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
            self._ops.put(("unsupported", unsupported))
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
        with self._lock:
            self._batches[entry_id] = RqBatch(delivery, name, jobs)
            self._held[name].update(job.id for job in jobs)
        return Batch(delivery, entry, items, time.monotonic(), remaining=len(jobs))

    # ----------------------------------------------------------------- writer

    def _write_loop(self) -> None:
        while (op := self._ops.get()) is not None:
            backoff = Backoff()
            while True:
                try:
                    self._apply(op)
                    break
                except REDIS_ERRORS as exc:
                    log.warning(
                        "recording RQ jobs failed (kept in memory), retrying in %.1fs: %s",
                        backoff.delay,
                        exc,
                    )
                except Exception:
                    log.exception("recording RQ jobs failed; they are left to RQ's cleanup")
                    self._forget(op)
                    break
                backoff.wait(threading.Event())

    def _apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "start":
            self._start(op[1], op[2])
        elif kind == "finish":
            ok, failed = self._finish(op[1], op[2])
            self.events.put(("rq-written", op[1], ok, failed))
        elif kind == "release":
            self._release(op[1])
        elif kind == "abandon":
            self._abandon(op[1], op[2])
        elif kind == "unsupported":
            for job in op[1]:
                assert job.unsupported is not None
                self.worker.fail_unstarted(job, job.unsupported)
                log.warning("RQ job %s (queue %s) failed: %s", job.id, job.queue, job.unsupported)

    def _forget(self, op: tuple[Any, ...]) -> None:
        """An op that cannot be applied: let the node go on without it."""
        if op[0] == "finish":
            self.events.put(("rq-written", op[1], 0, 0))

    def _start(self, name: str, jobs: list[rqa.RqJob]) -> None:
        now = time.time()
        codes = rqa.start(self.client, self.worker.name, self.keys[name], jobs, self.lease, now)
        with self._lock:
            for job, code in zip(jobs, codes, strict=True):
                self._held[name].discard(job.id)
                if code == 1:
                    job.started = now
                    self._running[job.member] = job
                else:
                    why = {0: "was taken back", -1: "no longer exists", -2: "was canceled"}[code]
                    log.warning(
                        "RQ job %s (queue %s) %s before it started; its outcome is dropped",
                        job.id,
                        name,
                        why,
                    )

    def _outcomes(self, batch: RqBatch, blobs: dict[int, bytes]) -> dict[int, rqa.Outcome]:
        """Each job's outcome, by index in the batch, from the chunks' result blobs."""
        out: dict[int, rqa.Outcome] = {}
        for lo, blob in blobs.items():
            values, errors, _ = pickle.loads(blob)
            for offset, value in enumerate(values):
                if value is not None:
                    out[lo + offset] = rqa.Outcome(*value)
            for error in errors:  # the node's: a pool process died, or could not run it
                offset, type_name, message = error[0], error[1], error[2]
                now = time.time()
                out[lo + offset] = rqa.Outcome(rqa.FAILED, f"{type_name}: {message}", now, now)
        return out

    def _finish(self, delivery: Delivery, blobs: dict[int, bytes]) -> tuple[int, int]:
        with self._lock:
            batch = self._batches.pop(delivery.entry_id)
        outcomes = self._outcomes(batch, blobs)
        ok, failed = self._record(batch, outcomes)
        log.info(
            "RQ queue %s batch %s: %d jobs, %d failed",
            batch.queue,
            delivery.entry_id.decode(),
            len(batch.jobs),
            failed,
        )
        return ok, failed

    def _record(self, batch: RqBatch, outcomes: dict[int, rqa.Outcome]) -> tuple[int, int]:
        fast: list[tuple[rqa.RqJob, rqa.Outcome]] = []
        slow: list[tuple[rqa.RqJob, rqa.Outcome]] = []
        for index, outcome in sorted(outcomes.items()):
            job = batch.jobs[index]
            if job.started is None:
                continue  # never started (start.lua said no): not ours to record
            (fast if job.fast(outcome.kind) else slow).append((job, outcome))
        keys = self.keys[batch.queue]
        lost = []
        if fast:
            codes, dependents = rqa.finish(self.client, self.worker.name, keys, fast, time.time())
            lost += [job for (job, _), code in zip(fast, codes, strict=True) if not code]
            if dependents:
                self.worker.enqueue_dependents(batch.queue, dependents)
        for job, outcome in slow:
            if not self.worker.record(job, outcome):
                lost.append(job)
        for job in lost:
            log.warning(
                "RQ job %s (queue %s): not recorded: its started-registry entry is gone (its "
                "lease lapsed and RQ's cleanup moved the job on)",
                job.id,
                batch.queue,
            )
        with self._lock:
            for job, _ in fast + slow:
                self._running.pop(job.member, None)
            idle = not self._running
        if idle:
            self.worker.idle()
        recorded = [o for (j, o) in fast + slow if j not in lost]
        failed = sum(1 for o in recorded if o.kind != rqa.OK)
        return len(recorded) - failed, failed

    def _release(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            with self._lock:
                batch = self._batches.pop(delivery.entry_id, None)
            if batch is None:
                continue
            unstarted = [job for job in batch.jobs if job.started is None]
            released = rqa.release(self.client, self.keys[batch.queue], [j.id for j in unstarted])
            with self._lock:
                self._held[batch.queue].difference_update(job.id for job in unstarted)
            log.info("RQ queue %s: %d jobs handed back", batch.queue, released)

    def _abandon(self, delivery: Delivery, blobs: dict[int, bytes]) -> None:
        with self._lock:
            batch = self._batches.get(delivery.entry_id)
        if batch is None:
            return
        outcomes = self._outcomes(batch, blobs)
        now = time.time()
        reason = (
            f"taskfan.NodeStopped: taskfan node {self.worker.name} stopped at once (a cold "
            "stop, or its grace period ran out) while this job ran"
        )
        for index, job in enumerate(batch.jobs):
            if job.started is not None and index not in outcomes:
                outcomes[index] = rqa.Outcome(rqa.FAILED, reason, job.started, now)
        self._record(batch, outcomes)
        self._release([delivery])

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
            except REDIS_ERRORS as exc:
                log.warning("RQ maintenance failed: %s", exc)
            except Exception:
                log.exception("RQ maintenance failed")
            self.closed.wait(1.0)

    def _maintain(self) -> None:
        with self._lock:
            own = {name: set(ids) for name, ids in self._held.items()}
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
