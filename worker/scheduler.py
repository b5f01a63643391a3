"""The node's bookkeeping: batches in, chunks out, results joined per batch.

No Redis, no processes, no threads: the node feeds it deliveries and chunk
results and sends what it returns, so every rule here is tested alone. What a
delivered entry must pass to become a batch is ``worker.intake``'s; what a
finished batch records is ``worker.recorder``'s; the batches and chunks
themselves are ``worker.batches``.

Rules:
- a batch is cut into chunks of the job's chunksize, else the node's, else one
  measured per function (``worker.sizing``);
- at most ``2 * processes`` chunks are in the pool (one running and one queued per
  process), so the pool stays busy across batch boundaries;
- chunks of a job with a ``hard_timeout`` hold one item and enter the pool only
  when a process is free, so their clock starts when they start;
- after a pool breaks, the chunks that were in it are suspects and run one at a
  time; a suspect that breaks the pool again is halved until the item that kills
  its process stands alone, and that item fails with the cause;
- an item the pool process says to retry waits in the node (``worker.retries``),
  not in the process; once due it goes back to the pool ahead of new chunks, in a
  chunk with the other items of its batch due then. The batch is done when every
  item has its final outcome. A node holds at most ``HELD_PER_PROCESS`` batches
  per process, so batches waiting for retries cannot pile up without end.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from taskfan.bounds import MAX_BACKOFF, MAX_TIMEOUT, capped
from taskfan.logs import batch_extra
from taskfan.protocol import BatchEntry
from worker.batches import TERMINATED, Batch, Chunk, Completed, Delivery, key
from worker.budget import DecodedBudget
from worker.child import ChunkResult, Retry
from worker.guard import Guard
from worker.intake import Intake
from worker.liveness import Liveness
from worker.parts import Part
from worker.recorder import Recorder
from worker.retries import RetryHeap
from worker.sizing import REGROW, ChunkSizer, guided, regrown
from worker.unrunnable import Unrunnable

log = logging.getLogger(__name__)

#: batches a node holds per process, at most (reached only when many wait for retries)
HELD_PER_PROCESS = 64
#: a node reads its next batch when the chunks waiting hold less than this many
#: seconds of work per process (``Scheduler.batches_wanted``)
READ_AHEAD_SECONDS = 0.1


class Scheduler:
    def __init__(
        self,
        processes: int,
        sizer: ChunkSizer,
        max_deliveries: int = 5,
        clock: Callable[[], float] = time.monotonic,
        guard: Guard | None = None,
        unrunnable: Unrunnable | None = None,
    ) -> None:
        self.processes = processes
        self.clock = clock
        self.sizer = sizer
        self.max_deliveries = max_deliveries
        #: signatures, refusals and limits (worker.guard); the default checks nothing
        self.guard = guard or Guard()
        self.recorder = Recorder(self.guard, sizer, clock)
        self.intake = Intake(
            self.guard, max_deliveries, self.recorder, unrunnable, chunk_size=self._chunk_size
        )
        self.batches: dict[tuple[str, bytes], Batch] = {}
        self.pending: deque[Chunk] = deque()
        self.suspects: deque[Chunk] = deque()
        #: how many chunks the last batch accepted was cut into
        self.last_chunks = 1
        self.in_pool: set[Chunk] = set()
        self.retries = RetryHeap()
        #: the jobs of the stream batches held, and those of them found ended
        self.liveness = Liveness()
        #: what the items of the batches held take decoded, and those waiting for room
        self.budget = DecodedBudget(self.guard.max_decoded_bytes)

    # ----------------------------------------------------------------- intake

    def accept(self, delivery: Delivery, now: float | None = None) -> Completed | None:
        """Take a delivered entry (``worker.intake``); returns a Completed when
        there is nothing to run (``give_back``: another node should run it)."""
        taken = self.intake.take(delivery, self.clock() if now is None else now)
        if isinstance(taken, Completed):
            return taken
        if self.budget.parked or not self.budget.fits(taken):
            self.budget.parked.append(taken)  # held, undecoded, until there is room
            self.batches[key(taken.delivery)] = taken
            self.liveness.hold(taken)
            return None
        completed = self._open(taken)
        if completed is None:
            self.liveness.hold(taken)  # held: its job's liveness is checked from now on
        return completed

    def _open(self, batch: Batch) -> Completed | None:
        """Decode the batch's items and cut it into chunks (its budget counted)."""
        decoded = self.intake.decode(batch)
        if isinstance(decoded, Completed):
            return decoded
        completed = self.admit(decoded)
        if completed is None:
            self.budget.count(decoded)
        return completed

    def unpark(self) -> list[Completed]:
        """Decode the batches waiting for the budget, as far as it has room."""
        out = []
        while self.budget.parked:
            batch = self.budget.parked[0]
            gone = self.batches.get(key(batch.delivery)) is not batch or batch.let_go
            if not gone and not self.budget.fits(batch):
                break
            self.budget.parked.popleft()
            if gone:
                continue  # handed back, or let go (its job ended), meanwhile
            del self.batches[key(batch.delivery)]  # admit holds it again
            completed = self._open(batch)
            if completed is not None:
                self.liveness.release(batch)  # not held after all
                out.append(completed)
        return out

    def admit(self, batch: Batch) -> Completed | None:
        """Take a batch whose entry and items are known: cut it into chunks.

        ``accept``'s second half, and the way in for batches that do not come
        from a stream entry (the RQ source's, ``worker.rq_source``)."""
        entry = batch.entry
        if entry.count == 0:
            return self.recorder.finish(batch)
        self.batches[key(batch.delivery)] = batch
        size = batch.chunk_size = batch.chunk_size or self._chunk_size(entry)
        large = size
        if not entry.options.hard_timeout:
            large = self.sizer.largest(entry.fn_ref, entry.count, entry.chunksize, entry.job_id)
        batch.chunk_large = large
        before = len(self.pending)
        for lo, hi in guided(entry.count, size, large, self.processes):
            self.pending.append(Chunk(batch, lo, hi))
        self.last_chunks = len(self.pending) - before
        return None

    def _chunk_size(self, entry: BatchEntry) -> int:
        """Items per chunk: one under a hard timeout, else the job's, the node's or
        one measured (``worker.sizing``)."""
        if entry.options.hard_timeout:
            return 1
        return self.sizer.chunksize(entry.fn_ref, entry.count, entry.chunksize, entry.job_id)

    def batches_wanted(self) -> int:
        """How many batches to read: none while a chunk per process waits, else
        enough to fill the pool's free slots (two chunks per process), counting
        that a batch gives as many chunks as the last one did. So a node of
        large batches holds one at a time, not one per free slot. One batch
        more when the chunks waiting are of one batch and hold little work
        (``_runs_dry``)."""
        backlog = len(self.pending) + len(self.suspects)
        if self.budget.full() or len(self.batches) >= HELD_PER_PROCESS * self.processes:
            return 0
        if backlog >= self.processes:
            return 1 if self._runs_dry() else 0
        slots = max(1, 2 * self.processes - len(self.in_pool) - backlog)
        return -(-slots // max(1, self.last_chunks))

    def _runs_dry(self) -> bool:
        """Whether the chunks waiting are of one batch and hold less than
        ``READ_AHEAD_SECONDS`` of work for the pool (by each job's measured
        cost): then the next batch is read now, so that a node of many small
        chunks (items of 20 ms, chunks of one or two) does not wait for the read
        and decode of its next batch with its processes idle. At most one batch
        is read ahead so: others' nodes need the rest."""
        if self.suspects or not self.pending:
            return False
        first = self.pending[0].batch
        if any(c.batch is not first for c in self.pending):
            return False
        entry = first.entry
        cost = self.sizer.job_cost(entry.job_id) or self.sizer.cost(entry.fn_ref)
        if cost is None:
            return False  # not measured: a chunk per process is ahead already
        items = sum(c.size for c in self.pending)
        return items * cost < READ_AHEAD_SECONDS * self.processes

    def take_unstarted(self) -> list[Batch]:
        """Remove and return the batches none of whose chunks has run or is running
        (a stopping node hands them back rather than start them)."""
        started = {id(c.batch) for c in (*self.in_pool, *self.suspects)}
        unstarted = [
            b
            for b in self.batches.values()
            if not b.blobs and not b.retried and not b.let_go and id(b) not in started
        ]
        gone = {id(b) for b in unstarted}
        self.pending = deque(c for c in self.pending if id(c.batch) not in gone)
        for batch in unstarted:
            self._forget(batch)
        return unstarted

    def take_waiting(self, after: float) -> list[Batch]:
        """Remove and return the batches that only wait for retries, none due
        before ``after`` (a stopping node cannot finish them in its grace period)."""
        busy = self._busy()
        earliest = self.retries.earliest()
        waiting = [
            b
            for b in self.batches.values()
            if b.retrying and id(b) not in busy and earliest.get(id(b), after) >= after
        ]
        for batch in waiting:
            self.retries.drop(batch)
            self._forget(batch)
        return waiting

    def ended(self, jobs: Mapping[str, str]) -> list[Completed]:
        """Jobs found ended (cancelled, gone: job id -> why; ``worker.liveness``).
        No chunk of theirs goes to the pool from now on: their chunks waiting for
        it and their items waiting to retry are dropped, and each of their
        batches is let go (acknowledged unrecorded; record.lua would refuse it)
        once no chunk of it is in the pool."""
        if not self.liveness.end(jobs):
            return []
        live = self.liveness.why_ended
        self.pending = deque(c for c in self.pending if live(c.batch) is None)
        self.suspects = deque(c for c in self.suspects if live(c.batch) is None)
        running = {id(c.batch) for c in self.in_pool}
        out = []
        for batch in list(self.batches.values()):
            why = live(batch)
            if why is not None and not batch.let_go:
                dropped = self.retries.drop(batch)
                batch.retries_dropped += dropped
                if id(batch) not in running:
                    out.append(self._let_go(batch, why))
        return out

    def _let_go(self, batch: Batch, why: str) -> Completed:
        """Acknowledge a batch of an ended job unrecorded (once)."""
        batch.let_go = True
        entry = batch.entry
        left = batch.remaining - batch.retries_dropped - batch.terminated
        killed = f", {batch.terminated} stopped in the pool" if batch.terminated else ""
        log.info(
            "job %s batch %s: %s; %d items not run%s, %d waiting to retry dropped, batch "
            "acknowledged unrecorded",
            entry.job_id, entry.field, why, left, killed, batch.retries_dropped,
            extra=batch_extra(
                entry.job_id, entry.field, retries_dropped=batch.retries_dropped,
                terminated=batch.terminated,
            ),
        )  # fmt: skip
        return Completed.let_go(batch.delivery)

    def terminated(self) -> list[Chunk]:
        """The chunks in the pool of jobs cancelled with terminate (a hard cancel):
        their processes are to be killed."""
        why = self.liveness.why_ended
        return [c for c in self.in_pool if why(c.batch) == TERMINATED]

    def killed(self, chunk: Chunk) -> Completed | None:
        """A chunk of a job cancelled with terminate, its process killed: its
        items are not run again, and its batch is let go once no chunk of it is
        in the pool (as for any cancelled job)."""
        self.in_pool.discard(chunk)
        chunk.deadline = None
        batch = chunk.batch
        batch.terminated += chunk.size
        return self._if_ended(batch)

    def _if_ended(self, batch: Batch) -> Completed | None:
        """A chunk of the batch left the pool: let the batch go if its job ended
        and no other chunk of it is still there."""
        why = self.liveness.why_ended(batch)
        if why is None or batch.let_go or any(c.batch is batch for c in self.in_pool):
            return None
        return self._let_go(batch, why)

    def _busy(self) -> set[int]:
        """ids of the batches with a chunk in the pool or waiting to go there."""
        return {id(c.batch) for c in (*self.in_pool, *self.suspects, *self.pending)}

    def release(self, delivery: Delivery) -> None:
        """The batch is recorded and acknowledged, or handed back: forget it."""
        batch = self.batches.get(key(delivery))
        if batch is not None:
            self.retries.drop(batch)
            self._forget(batch)

    def _forget(self, batch: Batch) -> None:
        del self.batches[key(batch.delivery)]
        self.liveness.release(batch)
        self.budget.uncount(batch)

    # ----------------------------------------------------------------- to the pool

    def next_chunk(self) -> Chunk | None:
        """The chunk to put in the pool now, if any: never one of a job found
        ended (``worker.liveness``; ``ended`` lets its batch go)."""
        while (chunk := self._next_chunk()) is not None:
            if self.liveness.why_ended(chunk.batch) is None:
                return chunk
        return None

    def _next_chunk(self) -> Chunk | None:
        if self.suspects:
            return self.suspects.popleft() if not self.in_pool else None
        if not self.pending or len(self.in_pool) >= 2 * self.processes:
            return None
        if self.pending[0].batch.entry.options.hard_timeout and len(self.in_pool) >= self.processes:
            return None  # its clock must start when it starts: wait for a free process
        return self.pending.popleft()

    def retries_due(self, now: float) -> None:
        """Items whose retry is due go to the front of the queue, in chunks of
        their batch's items due together."""
        chunks = []
        for batch, due in self.retries.pop_due(now):
            entry = batch.entry
            if entry.options.hard_timeout:
                size = 1
            else:
                size = self.sizer.chunksize(entry.fn_ref, len(due), entry.chunksize, entry.job_id)
            chunks += [Chunk.of_retries(batch, due[i : i + size]) for i in range(0, len(due), size)]
        self.pending.extendleft(reversed(chunks))

    def next_retry(self) -> float | None:
        """When the earliest retry is due (monotonic seconds)."""
        return self.retries.next_due()

    def sent(self, chunk: Chunk, now: float) -> None:
        hard = chunk.batch.entry.options.hard_timeout
        chunk.deadline = now + capped(hard, MAX_TIMEOUT) if hard else None
        self.in_pool.add(chunk)

    def unsent(self, chunk: Chunk) -> None:
        """The pool refused the chunk (it is broken): put it back at the front."""
        (self.suspects if chunk.suspect else self.pending).appendleft(chunk)

    def next_deadline(self) -> float | None:
        deadlines = [c.deadline for c in self.in_pool if c.deadline is not None]
        return min(deadlines) if deadlines else None

    def expired(self, now: float) -> list[Chunk]:
        return [c for c in self.in_pool if c.deadline is not None and c.deadline <= now]

    # ----------------------------------------------------------------- from the pool

    def done(self, chunk: Chunk, result: ChunkResult, now: float | None = None) -> Completed | None:
        """The pool ran the chunk; its retries are due from ``now`` (default: the clock)."""
        self.in_pool.discard(chunk)
        if self._dropped(chunk):
            return None
        entry = chunk.batch.entry
        self.sizer.observe(entry.fn_ref, chunk.size, result.seconds, entry.job_id)
        self._regrow(entry)
        if result.retries and now is None:
            now = self.clock()
        return self._store(chunk.batch, result.parts, result.retries, now or 0.0)

    def error(self, chunk: Chunk, type_name: str, message: str) -> Completed | None:
        """Every item of the chunk fails with the same error (e.g. a hard timeout)."""
        self.in_pool.discard(chunk)
        if self._dropped(chunk):
            return None
        batch = chunk.batch
        parts = [
            Part(
                lo,
                hi - lo,
                hi - lo,
                self.recorder.error_blob(batch, lo, hi - lo, type_name, message, tries),
            )
            for lo, hi, tries in chunk.runs()
        ]
        return self._store(batch, parts, (), self.clock())

    def requeue(self, chunk: Chunk) -> Completed | None:
        """Run the chunk again (the pool was stopped under it for another's sake),
        unless its job ended meanwhile."""
        self.in_pool.discard(chunk)
        chunk.deadline = None
        if self.liveness.why_ended(chunk.batch) is not None:
            return self._if_ended(chunk.batch)
        (self.suspects if chunk.suspect else self.pending).appendleft(chunk)
        return None

    def crashed(self, chunk: Chunk, cause: str) -> Completed | None:
        """The chunk was in a pool whose process died."""
        self.in_pool.discard(chunk)
        if self._dropped(chunk):
            return None
        chunk.deadline = None
        if self.liveness.why_ended(chunk.batch) is not None:
            return self._if_ended(chunk.batch)
        if not chunk.suspect:
            chunk.suspect = True
            self.suspects.append(chunk)
            return None
        # It ran alone and broke the pool again: it holds the poison item.
        if chunk.size == 1:
            message = f"worker process died: {cause}"
            entry = chunk.batch.entry
            log.warning(
                "%s: %s", chunk.where(), message, extra=batch_extra(entry.job_id, entry.field)
            )
            return self.error(chunk, "WorkerProcessDied", message)
        self.suspects.extendleft(reversed(chunk.halves()))
        return None

    def cannot_run(self, chunk: Chunk, type_name: str, reason: str) -> Completed | None:
        """The pool process could not import the chunk's function (or may not run
        it): note it (``worker.unrunnable``) and let the whole batch go, for a
        node that can; its later batches go back from the intake."""
        self.in_pool.discard(chunk)
        batch = chunk.batch
        if self._dropped(chunk):
            return None  # another chunk of it said so first
        queue = batch.delivery.queue.name
        if not self.intake.unrunnable.note(batch.entry.fn_ref, type_name, reason, queue):
            return self.error(chunk, type_name, reason)  # past MAX_TRACKED: fail it now
        gone = id(batch)
        self.pending = deque(c for c in self.pending if id(c.batch) != gone)
        self.suspects = deque(c for c in self.suspects if id(c.batch) != gone)
        self.release(batch.delivery)
        return Completed.handed_back(batch.delivery)

    def _regrow(self, entry: BatchEntry) -> None:
        """The job's own cost is measured: re-cut the chunks of its batches that
        wait for the pool when it makes them ``REGROW`` times larger (a job
        cut with another job's cost of the same function)."""
        if entry.options.hard_timeout or not self.sizer.automatic(entry.chunksize):
            return
        job = entry.job_id
        waiting: dict[int, Batch] = {}
        for c in self.pending:
            b = c.batch
            if b.entry.job_id == job and c.retrying is None and not c.suspect:
                waiting.setdefault(id(b), b)
        grown = {}
        for batch in waiting.values():
            count = batch.entry.count
            small = self.sizer.chunksize(entry.fn_ref, count, 0, job)
            large = self.sizer.largest(entry.fn_ref, count, 0, job)
            if small >= REGROW * max(1, batch.chunk_size) or large >= REGROW * max(
                1, batch.chunk_large
            ):
                # never smaller: the budget counted the chunks of the first cut
                batch.chunk_size = max(small, batch.chunk_size)
                batch.chunk_large = max(large, batch.chunk_size)
                grown[id(batch)] = batch
        if grown:
            self.pending = deque(regrown(self.pending, grown, self.processes))

    def _dropped(self, chunk: Chunk) -> bool:
        """Whether the chunk's batch was let go while the chunk ran (its result is
        of no use: the batch went back to the queue)."""
        return self.batches.get(key(chunk.batch.delivery)) is not chunk.batch

    # ----------------------------------------------------------------- batches

    def _store(
        self, batch: Batch, parts: Sequence[Part], retries: Sequence[Retry], now: float
    ) -> Completed | None:
        if self.liveness.why_ended(batch) is not None:
            return self._if_ended(batch)
        for part in parts:
            # Settled items' inputs are not needed again (their outcomes keep what a
            # retry round needs): free them now rather than with the whole batch.
            batch.items[part.offset : part.offset + part.size] = itertools.repeat(None, part.size)
            batch.blobs[part.offset] = part.blob
            batch.failures[part.offset] = part.failed
            batch.failed += part.failed
            batch.remaining -= part.size
        if retries:
            for retry in retries:
                delay = capped(retry.delay, MAX_BACKOFF)
                self.retries.push(now + delay, batch, retry.offset, retry.attempt)
            batch.retried += len(retries)
        return self.recorder.finish(batch) if batch.remaining == 0 else None
