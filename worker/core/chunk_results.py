"""What the pool says of a chunk, joined into its batch's outcome.

Results and errors are stored per item; retries wait in the node's retry heap
(``worker.core.retries``); a chunk in a pool that broke becomes a suspect and runs
alone, and a suspect that breaks the pool again is halved until the item that
kills its process stands alone and fails with the cause. A batch whose every
item has its final outcome is finished (``worker.core.recorder``). Part of the
node's ``Scheduler``.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Sequence

from taskfan.bounds import MAX_BACKOFF, capped
from taskfan.logs import batch_extra
from worker.core.batches import Batch, Chunk, Completed
from worker.core.chunk_queue import ChunkQueue
from worker.core.job_ends import JobEnds
from worker.pool.child import ChunkResult, Retry
from worker.pool.outcome_parts import Part

#: the Scheduler's lines keep the logger name they had (operators filter on it)
log = logging.getLogger("worker.core.scheduler")


class ChunkResults(JobEnds, ChunkQueue):
    """The Scheduler's part for what the pool says of its chunks."""

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
        it): note it (``worker.core.unrunnable``) and let the whole batch go, for a
        node that can; its later batches go back from the intake."""
        self.in_pool.discard(chunk)
        batch = chunk.batch
        if self._dropped(chunk):
            return None  # another chunk of it said so first
        queue = batch.delivery.queue.name
        if not self.intake.unrunnable.note(batch.entry.fn_ref, type_name, reason, queue):
            return self.error(chunk, type_name, reason)  # past MAX_TRACKED: fail it now
        gone = id(batch)
        self.pending.keep(lambda c: id(c.batch) != gone)
        self.suspects = deque(c for c in self.suspects if id(c.batch) != gone)
        self.release(batch.delivery)
        return Completed.handed_back(batch.delivery)

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
