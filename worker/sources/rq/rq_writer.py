"""The RQ source's writer thread: what a node records about RQ jobs, in order.

Its operations, queued by the node's main thread, the RQ reader and the node's
shutdown (``RqWriter.put``), go to Redis one after the other, through
``worker.sources.rq.adapter``: a job's start is always recorded before its outcome.

- ``StartJobs(queue, jobs)``: a chunk entered the pool (start.lua);
- ``FinishBatch(delivery, blobs)``: a batch is complete: each job's outcome, from
  the chunks' result blobs, by finish.lua or RQ's own code; then it calls
  ``written(delivery, ok, failed)`` (the source tells the node: ``Written``);
- ``ReleaseBatches(deliveries)``: batches the node will not start go back to
  their queue's head;
- ``AbandonBatch(delivery, blobs)``: a cold stop: what ran is recorded, what was
  running fails (RQ's failure path), what never started goes back;
- ``FailUnsupported(jobs)``: jobs taskfan does not run fail with the reason.

Redis errors are retried with backoff (the outcomes stay in memory meanwhile);
any other error drops the operation with a logged traceback, leaving its jobs to
RQ's cleanup and the node's maintenance.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import redis

from taskfan.codec import PICKLE
from taskfan.outcomes import decode_chunk
from taskfan.transient import TRANSIENT, Backoff
from worker.core.batches import Delivery
from worker.node.messages import unhandled
from worker.sources.rq import adapter as rqa

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StartJobs:
    """A chunk of ``jobs`` of RQ queue ``queue`` entered the pool."""

    queue: str
    jobs: Sequence[rqa.RqJob]


@dataclass(frozen=True, slots=True)
class FinishBatch:
    """Every job of a batch has an outcome: record them from the chunks' blobs
    (offset of a chunk's first job -> its result blob)."""

    delivery: Delivery
    blobs: Mapping[int, bytes]


@dataclass(frozen=True, slots=True)
class ReleaseBatches:
    """Batches the node will not start: their jobs go back to the queue's head."""

    deliveries: Sequence[Delivery]


@dataclass(frozen=True, slots=True)
class AbandonBatch:
    """A cold stop: record what ran, fail what was running, hand back the rest."""

    delivery: Delivery
    blobs: Mapping[int, bytes]


@dataclass(frozen=True, slots=True)
class FailUnsupported:
    """Jobs taskfan does not run (``RqJob.unsupported`` says why): they fail."""

    jobs: Sequence[rqa.RqJob]


#: an operation for the RQ writer thread
RqOp = StartJobs | FinishBatch | ReleaseBatches | AbandonBatch | FailUnsupported


@dataclass(eq=False)
class RqBatch:
    delivery: Delivery
    queue: str
    jobs: list[rqa.RqJob]
    #: how many jobs from the front were sent to the pool (start requested)
    requested: int = 0


@dataclass
class RqBooks:
    """What the RQ source's threads share, under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: batches read and not yet recorded or handed back, by entry id
    batches: dict[bytes, RqBatch] = field(default_factory=dict)
    #: per queue, the ids of dequeued jobs not started (the heartbeat keeps them held)
    held: dict[str, set[str]] = field(default_factory=dict)
    #: started jobs, by execution member (the heartbeat renews their leases)
    running: dict[str, rqa.RqJob] = field(default_factory=dict)


class RqWriter:
    def __init__(
        self,
        client: redis.Redis,
        worker: rqa.RqWorker,
        keys: dict[str, rqa.QueueKeys],
        books: RqBooks,
        written: Callable[[Delivery, int, int], None],
        lease: int,
    ) -> None:
        self.client = client
        self.worker = worker
        self.keys = keys
        self.books = books
        #: called (in this thread) once a batch is recorded: its ``ok`` and ``failed`` jobs
        self.written = written
        self.lease = lease
        self._ops: queue.Queue[RqOp | None] = queue.Queue()

    def put(self, op: RqOp) -> None:
        self._ops.put(op)

    def close(self) -> None:
        """Stop once the operations queued so far are done."""
        self._ops.put(None)

    def run(self) -> None:
        while (op := self._ops.get()) is not None:
            backoff = Backoff()
            while True:
                try:
                    self._apply(op)
                    break
                except TRANSIENT as exc:
                    log.warning(
                        "recording RQ jobs failed (kept in memory), retrying in %.1fs: %s",
                        backoff.delay,
                        exc,
                    )
                except BaseException:  # RQ re-pickles a job's value: the user's code runs
                    log.exception("recording RQ jobs failed; they are left to RQ's cleanup")
                    self._forget(op)
                    break
                backoff.wait(threading.Event())

    def _apply(self, op: RqOp) -> None:
        match op:
            case StartJobs(name, jobs):
                self._start(name, jobs)
            case FinishBatch(delivery, blobs):
                ok, failed = self._finish(delivery, blobs)
                self.written(delivery, ok, failed)
            case ReleaseBatches(deliveries):
                self.release(deliveries)
            case AbandonBatch(delivery, blobs):
                self._abandon(delivery, blobs)
            case FailUnsupported(jobs):
                for job in jobs:
                    assert job.unsupported is not None
                    if self._alone(job, self._fail_unstarted, job):
                        log.warning(
                            "RQ job %s (queue %s) failed: %s", job.id, job.queue, job.unsupported
                        )
            case _:
                unhandled(op)

    @staticmethod
    def _alone(job: rqa.RqJob, call: Callable[..., object], *args: object) -> object:
        """``call(*args)`` for one job, whose hash RQ's own code reads: a hash with
        garbage in it (which RQ's Job.fetch cannot parse) fails that job alone,
        left to RQ's cleanup, not the other jobs recorded with it (None). Redis
        errors still reach the writer's retry."""
        try:
            return call(*args)
        except TRANSIENT:
            raise
        except BaseException:  # RQ's code on a hash anyone may have written
            log.exception(
                "RQ job %s (queue %s): cannot be recorded: RQ's own code failed on its hash "
                "(garbage in a field?); it is left to RQ's cleanup",
                job.id,
                job.queue,
            )
            return None

    def _fail_unstarted(self, job: rqa.RqJob) -> bool:
        assert job.unsupported is not None
        self.worker.fail_unstarted(job, job.unsupported)
        return True

    def _forget(self, op: RqOp) -> None:
        """An op that cannot be applied: let the node go on without it. A batch's
        jobs leave the books (no more lease renewals or held markers): RQ's cleanup
        and the node's maintenance take them from there."""
        if isinstance(op, FinishBatch):
            with self.books.lock:
                batch = self.books.batches.pop(op.delivery.entry_id, None)
                if batch is not None:
                    for job in batch.jobs:
                        self.books.running.pop(job.member, None)
                        self.books.held[batch.queue].discard(job.id)
            self.written(op.delivery, 0, 0)

    def _start(self, name: str, jobs: Sequence[rqa.RqJob]) -> None:
        now = time.time()
        codes = rqa.start(self.client, self.worker.name, self.keys[name], jobs, self.lease, now)
        with self.books.lock:
            for job, code in zip(jobs, codes, strict=True):
                self.books.held[name].discard(job.id)
                if code == 1:
                    job.started = now
                    self.books.running[job.member] = job
                else:
                    why = {0: "was taken back", -1: "no longer exists", -2: "was canceled"}[code]
                    log.warning(
                        "RQ job %s (queue %s) %s before it started; its outcome is dropped",
                        job.id,
                        name,
                        why,
                    )

    def _outcomes(self, batch: RqBatch, blobs: Mapping[int, bytes]) -> dict[int, rqa.Outcome]:
        """Each job's outcome, by index in the batch, from the chunks' result blobs."""
        out: dict[int, rqa.Outcome] = {}
        for lo, blob in blobs.items():
            values, errors, _ = decode_chunk(blob, PICKLE, f"RQ batch {batch.queue}")
            for offset, value in enumerate(values):
                if value is not None and offset not in errors:
                    out[lo + offset] = rqa.Outcome(*value)
            for offset, error in errors.items():  # the node's: a process died, or could not run it
                now = time.time()
                text = f"{error.type}: {error.message}"
                out[lo + offset] = rqa.Outcome(rqa.FAILED, text, now, now)
        return out

    def _finish(self, delivery: Delivery, blobs: Mapping[int, bytes]) -> tuple[int, int]:
        with self.books.lock:  # it leaves the books once recorded: a retry finds it
            batch = self.books.batches[delivery.entry_id]
        outcomes = self._outcomes(batch, blobs)
        ok, failed = self._record(batch, outcomes)
        with self.books.lock:
            self.books.batches.pop(delivery.entry_id, None)
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
            if not self._alone(job, self.worker.record, job, outcome):
                lost.append(job)
        for job in lost:
            log.warning(
                "RQ job %s (queue %s): not recorded: its started-registry entry is gone (its "
                "lease lapsed and RQ's cleanup moved the job on)",
                job.id,
                batch.queue,
            )
        with self.books.lock:
            for job, _ in fast + slow:
                self.books.running.pop(job.member, None)
            idle = not self.books.running
        if idle:
            self.worker.idle()
        recorded = [o for (j, o) in fast + slow if j not in lost]
        failed = sum(1 for o in recorded if o.kind != rqa.OK)
        return len(recorded) - failed, failed

    def release(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            with self.books.lock:
                batch = self.books.batches.pop(delivery.entry_id, None)
            if batch is None:
                continue
            unstarted = [job for job in batch.jobs if job.started is None]
            released = rqa.release(self.client, self.keys[batch.queue], [j.id for j in unstarted])
            with self.books.lock:
                self.books.held[batch.queue].difference_update(job.id for job in unstarted)
            log.info("RQ queue %s: %d jobs handed back", batch.queue, released)

    def _abandon(self, delivery: Delivery, blobs: Mapping[int, bytes]) -> None:
        with self.books.lock:
            batch = self.books.batches.get(delivery.entry_id)
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
        self.release([delivery])
