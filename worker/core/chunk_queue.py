"""What goes to the pool next, and when a node reads more batches.

At most ``2 * processes`` chunks are in the pool (one running and one queued per
process), more (up to ``MOST_IN_POOL`` a process) only while their measured
work is a few milliseconds; suspects (``worker.core.chunk_results``) run one at
a time; chunks of a job with a ``hard_timeout`` enter only when a process is
free; retries due go ahead of new chunks. A job whose cost is measured
meanwhile has its waiting chunks re-cut larger
(``worker.core.chunk_sizing.regrown``). Part of the node's ``Scheduler``.
"""

from __future__ import annotations

import math

from taskfan.bounds import MAX_TIMEOUT, capped
from taskfan.protocol import BatchEntry
from worker.core.batches import Batch, Chunk
from worker.core.chunk_sizing import REGROW, regrown
from worker.core.held_books import HeldBooks
from worker.core.pending import PendingChunks

#: batches a node holds per process, at most (reached only when many wait for retries)
HELD_PER_PROCESS = 64
#: a node reads its next batches when the chunks waiting hold less than this many
#: seconds of work per process (``Scheduler.batches_wanted``) ...
READ_AHEAD_SECONDS = 0.1
#: what a chunk costs beside its items' work, as the read-ahead counts it: the
#: node's part in sending it to the pool and settling its result (about 0.1 ms
#: of the node's main thread on our 2-core machines). Items counted alone, a
#: job of one no-op item per chunk looked like no work at all, and a node read
#: 64 batches per process of it: 20 s of chunks, none left for other nodes.
CHUNK_SECONDS = 1e-4
#: ... or than this many of its round trips to Redis, when that is longer
ROUND_TRIPS_AHEAD = 2
#: batches read ahead at once, at most, per process
MOST_AHEAD = 8
#: beyond two chunks per process, more may wait in the pool while their work
#: (by the measured cost) is under this many seconds per process: after a short
#: chunk a process would otherwise idle for the hand-off back to the node's
#: loop and out again (0.2-1 ms) ...
POOL_WORK_SECONDS = 0.005
#: ... up to this many chunks per process
MOST_IN_POOL = 16


class ChunkQueue(HeldBooks):
    """The Scheduler's part for what goes to the pool next."""

    def batches_wanted(self) -> int:
        """How many batches to read: none while a chunk per process waits, else
        enough to fill the pool's free slots (two chunks per process), counting
        that a batch gives as many chunks as the last one did. So a node of
        large batches holds one at a time, not one per free slot. More when the
        chunks waiting hold little work (``_read_ahead``)."""
        backlog = len(self.pending) + len(self.suspects)
        if self.budget.full() or len(self.batches) >= HELD_PER_PROCESS * self.processes:
            return 0
        ahead = self._read_ahead()
        if backlog >= self.processes:
            return ahead
        slots = max(1, 2 * self.processes - len(self.in_pool) - backlog)
        return max(ahead, -(-slots // max(1, self.last_chunks)))

    def _read_ahead(self) -> int:
        """Batches to read now so that the work waiting (by each job's measured
        cost, and ``CHUNK_SECONDS`` a chunk; with none waiting, the work in the
        pool) does not run out before they arrive: none while it holds more
        than the horizon per process, ``READ_AHEAD_SECONDS`` or two of the
        node's round trips to Redis, whichever is longer; else as many batches
        like the last one as bring it there (at least one). So a node of many
        small chunks (items of 20 ms, chunks of one or two) does not wait for
        the read and decode of its next batch with its processes idle, and a
        node far from Redis asks for its next batches a round trip early.
        Never more than the horizon's worth: others' nodes need the rest.

        Weighed by job (``PendingChunks`` keeps the sums), not by chunk: it runs
        on every turn of the node's loop, with thousands of chunks waiting."""
        if self.suspects or not (self.pending or self.in_pool):
            return 0
        # with none waiting, those in the pool: at most their work
        chunks = self.pending or PendingChunks(self.in_pool)
        work = len(chunks) * CHUNK_SECONDS
        for (job_id, fn_ref), items in chunks.waiting().items():
            cost = self._cost_of(job_id, fn_ref)
            if cost is None:
                return 0  # not measured: a chunk per process is ahead already
            work += items * cost
        horizon = max(READ_AHEAD_SECONDS, ROUND_TRIPS_AHEAD * self.round_trip())
        want = horizon * self.processes - work
        if want <= 1e-9:  # (sums of floats)
            return 0
        last = (self.pending[-1] if self.pending else next(iter(self.in_pool))).batch.entry
        per_batch = last.count * (self._cost(last) or 0.0) + self.last_chunks * CHUNK_SECONDS
        return min(MOST_AHEAD * self.processes, max(1, math.ceil(want / per_batch)))

    def _cost(self, entry: BatchEntry) -> float | None:
        return self._cost_of(entry.job_id, entry.fn_ref)

    def _cost_of(self, job_id: str, fn_ref: str) -> float | None:
        """The job's own measured cost per item, else its function's."""
        return self.sizer.job_cost(job_id) or self.sizer.cost(fn_ref)

    # ----------------------------------------------------------------- to the pool

    def _pool_full(self, coming: Chunk) -> bool:
        """Whether ``coming`` must wait: two chunks per process are in the pool,
        and more only while the work in it, ``coming`` counted, is short by
        each job's own measured cost (``POOL_WORK_SECONDS``, ``MOST_IN_POOL``)."""
        held = len(self.in_pool)
        if held < 2 * self.processes:
            return False
        if held >= MOST_IN_POOL * self.processes:
            return True
        work = 0.0
        for chunk in (coming, *self.in_pool):
            # The job's own cost, not the function's: a job of dear items cut by
            # a cheap job's cost would fill the pool with seconds of work, which
            # a cancel or a retry due could no longer get ahead of.
            cost = self.sizer.job_cost(chunk.batch.entry.job_id)
            if cost is None:
                return True  # not measured: no more than two a process
            work += chunk.size * cost
        return work > POOL_WORK_SECONDS * self.processes

    def next_chunk(self) -> Chunk | None:
        """The chunk to put in the pool now, if any: never one of a job found
        ended (``worker.core.liveness``; ``ended`` lets its batch go)."""
        while (chunk := self._next_chunk()) is not None:
            if self.liveness.why_ended(chunk.batch) is None:
                return chunk
        return None

    def _next_chunk(self) -> Chunk | None:
        if self.suspects:
            return self.suspects.popleft() if not self.in_pool else None
        if not self.pending or self._pool_full(self.pending[0]):
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
            self.pending.replace(list(regrown(self.pending, grown, self.processes)))
