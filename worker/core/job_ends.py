"""Batches of jobs found ended (cancelled, gone) while a node holds them.

No chunk of an ended job goes to the pool; its batches are let go
(acknowledged unrecorded) once no chunk of theirs is in the pool, and the
chunks of a job cancelled with terminate have their processes killed
(``worker.core.liveness`` finds the ended jobs). Part of the node's ``Scheduler``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping

from taskfan.logs import batch_extra
from worker.core.batches import TERMINATED, Batch, Chunk, Completed
from worker.core.held_books import HeldBooks

#: the Scheduler's lines keep the logger name they had (operators filter on it)
log = logging.getLogger("worker.core.scheduler")


class JobEnds(HeldBooks):
    """The Scheduler's part for jobs found ended."""

    def ended(self, jobs: Mapping[str, str]) -> list[Completed]:
        """Jobs found ended (cancelled, gone: job id -> why; ``worker.core.liveness``).
        No chunk of theirs goes to the pool from now on: their chunks waiting for
        it and their items waiting to retry are dropped, and each of their
        batches is let go (acknowledged unrecorded; record.lua would refuse it)
        once no chunk of it is in the pool."""
        if not self.liveness.end(jobs):
            return []
        live = self.liveness.why_ended
        self.pending.keep(lambda c: live(c.batch) is None)
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
