"""The books of the batches a node holds: taken in, cut into chunks, forgotten.

``HeldBooks`` is the state of the node's ``Scheduler`` (``worker.core.scheduler``)
and its intake side: a delivered entry is checked (``worker.core.intake``), held
undecoded while the decoded budget has no room (``worker.core.decoded_budget``), then cut
into chunks of the job's size, the node's, or one measured (``worker.core.chunk_sizing``).
A stopping node takes back the batches it has not started or that only wait for
retries; a recorded or handed-back batch is forgotten. No Redis, no clock of its
own: the clock is an argument.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from taskfan.protocol import BatchEntry
from worker.core.batches import Batch, Chunk, Completed, Delivery, key
from worker.core.chunk_sizing import ChunkSizer, guided
from worker.core.decoded_budget import DecodedBudget
from worker.core.entry_checks import Guard
from worker.core.intake import Intake
from worker.core.liveness import Liveness
from worker.core.pending import PendingChunks
from worker.core.recorder import Recorder
from worker.core.retries import RetryHeap
from worker.core.unrunnable import Unrunnable


class HeldBooks:
    """The Scheduler's state, and the batches it holds in and out."""

    def __init__(
        self,
        processes: int,
        sizer: ChunkSizer,
        max_deliveries: int = 5,
        clock: Callable[[], float] = time.monotonic,
        guard: Guard | None = None,
        unrunnable: Unrunnable | None = None,
        round_trip: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.processes = processes
        #: the node's round trip to Redis in seconds (0: unknown; measured by
        #: ``worker.sources.streams.round_trips``)
        self.round_trip = round_trip
        self.clock = clock
        self.sizer = sizer
        self.max_deliveries = max_deliveries
        #: signatures, refusals and limits (worker.core.entry_checks); the default checks nothing
        self.guard = guard or Guard()
        self.recorder = Recorder(self.guard, sizer, clock)
        self.intake = Intake(
            self.guard, max_deliveries, self.recorder, unrunnable, chunk_size=self._chunk_size
        )
        self.batches: dict[tuple[str, bytes], Batch] = {}
        self.pending = PendingChunks()
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
        """Take a delivered entry (``worker.core.intake``); returns a Completed when
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

        ``accept``'s second half, and the way in for batches a source built
        itself, with no entry for the intake to check (``worker.sources.base``)."""
        entry = batch.entry
        if entry.count == 0:
            return self.recorder.finish(batch)
        self.batches[key(batch.delivery)] = batch
        size = batch.chunk_size = batch.chunk_size or self._chunk_size(entry)
        large = small = size
        if not entry.options.hard_timeout:
            large = self.sizer.largest(entry.fn_ref, entry.count, entry.chunksize, entry.job_id)
            small = self.sizer.smallest(entry.fn_ref, entry.count, entry.chunksize, entry.job_id)
        batch.chunk_large = large
        before = len(self.pending)
        for lo, hi in guided(entry.count, min(size, small), large, self.processes):
            self.pending.append(Chunk(batch, lo, hi))
        self.last_chunks = len(self.pending) - before
        return None

    def _chunk_size(self, entry: BatchEntry) -> int:
        """Items per chunk: one under a hard timeout, else the job's, the node's or
        one measured (``worker.core.chunk_sizing``)."""
        if entry.options.hard_timeout:
            return 1
        return self.sizer.chunksize(entry.fn_ref, entry.count, entry.chunksize, entry.job_id)

    def take_unstarted(self) -> list[Batch]:
        """Remove and return the batches none of whose chunks has run or is running
        (a stopping node hands them back rather than start them)."""
        started = {id(c.batch) for c in (*self.in_pool, *self.suspects)}
        unstarted = [
            b
            for b in self.batches.values()
            if not b.blobs and not b.retried and not b.let_go and id(b) not in started
        ]
        if not unstarted:  # (asked on every turn of a stopping node's loop)
            return []
        gone = {id(b) for b in unstarted}
        self.pending.keep(lambda c: id(c.batch) not in gone)
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

    def _busy(self) -> set[int]:
        """ids of the batches with a chunk in the pool or waiting to go there
        (those waiting from ``PendingChunks``' sums: a stopping node asks on
        every turn of its loop, with thousands of chunks waiting)."""
        busy = set(self.pending.batch_ids())
        busy.update(id(c.batch) for c in (*self.in_pool, *self.suspects))
        return busy

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

    def _dropped(self, chunk: Chunk) -> bool:
        """Whether the chunk's batch was let go while the chunk ran (its result is
        of no use: the batch went back to the queue)."""
        return self.batches.get(key(chunk.batch.delivery)) is not chunk.batch
