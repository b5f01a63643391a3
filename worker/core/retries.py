"""Items waiting out a retry's backoff: held by the node, not by a pool process.

A pool process that sees an item raise, with attempts left and its type in the
job's ``retry_on``, returns it as a ``worker.pool.child.Retry`` (which attempt, after
how many seconds) and goes on with its chunk. The scheduler pushes it here,
keyed by the monotonic time it is due; when that time comes the scheduler takes
every item due, groups them by batch, and sends them to the pool as chunks of
their own. Meanwhile the process is free for other work, and the batch stays
held (its lease refreshed by the heartbeat) until every item has its outcome.

Entries of a batch that is given up (handed back, or its job cancelled) stay in
the heap and are skipped when they surface: dropping is O(1).
"""

from __future__ import annotations

import heapq
import itertools

from worker.core.batches import Batch


class RetryHeap:
    def __init__(self) -> None:
        #: (due, tie-breaker, batch, offset in the batch, attempt to make)
        self._heap: list[tuple[float, int, Batch, int, int]] = []
        self._order = itertools.count()
        #: items waiting, all batches (the node record and metrics read it)
        self.pending = 0
        #: job id -> items of it waiting (the heartbeat checks these jobs are active)
        self.jobs: dict[str, int] = {}

    def push(self, due: float, batch: Batch, offset: int, attempt: int) -> None:
        heapq.heappush(self._heap, (due, next(self._order), batch, offset, attempt))
        batch.retrying += 1
        self._count(batch, 1)

    def next_due(self) -> float | None:
        """When the earliest item is due (monotonic seconds), or None."""
        self._skip_dropped()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[Batch, list[tuple[int, int]]]]:
        """The items due by ``now``: per batch, in the order they came due,
        (offset, attempt) sorted by offset."""
        due: dict[int, tuple[Batch, list[tuple[int, int]]]] = {}
        while True:
            self._skip_dropped()
            if not self._heap or self._heap[0][0] > now:
                break
            _, _, batch, offset, attempt = heapq.heappop(self._heap)
            due.setdefault(id(batch), (batch, []))[1].append((offset, attempt))
            batch.retrying -= 1
            self._count(batch, -1)
        return [(batch, sorted(items)) for batch, items in due.values()]

    def drop(self, batch: Batch) -> int:
        """Forget the batch's items (they are skipped when they surface); how many."""
        dropped, batch.retrying = batch.retrying, 0
        batch.dropped = True
        if dropped:
            self._count(batch, -dropped)
        return dropped

    def earliest(self) -> dict[int, float]:
        """id(batch) -> when its earliest item is due, for batches with items waiting."""
        out: dict[int, float] = {}
        for due, _, batch, _, _ in self._heap:
            if not batch.dropped and due < out.get(id(batch), float("inf")):
                out[id(batch)] = due
        return out

    def _skip_dropped(self) -> None:
        while self._heap and self._heap[0][2].dropped:
            heapq.heappop(self._heap)

    def _count(self, batch: Batch, n: int) -> None:
        self.pending += n
        job = batch.entry.job_id
        left = self.jobs.get(job, 0) + n
        if left > 0:
            self.jobs[job] = left
        else:
            self.jobs.pop(job, None)
