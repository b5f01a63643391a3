"""How many items go into one pool message (the chunksize), per function.

The node measures each function's cost per item from the chunks it runs and
aims each chunk at ``TARGET_SECONDS``: long enough that pickling and IPC are
noise, short enough that a batch spreads over every process. Two caps keep the
pool busy whatever the cost:

- a chunk holds at most ``1 / CHUNKS_PER_PROCESS`` of a process's share of the
  batch, so that the node pickles the next chunk while a process runs this one,
  and a batch of cheap items does not go out as one message per process (which
  would leave the processes idle while the node encodes and decodes it);
- before the first measurement, the same cap: the measurement comes soon, and a
  slow function does not sit in one process.

A function's cost can change from job to job (the same function over other
arguments: the seed's ``task((v, num_calc))`` costs 3.6 ms an item at one
``num_calc`` and 0.2 us at another), so the node also measures each job on its
own: once a chunk of a job has run, that job's chunks are sized from the job's
own cost, not the function's average, and the scheduler re-cuts the chunks of
the job's batches that have not gone to the pool yet when the job's own cost
says they should be at least ``REGROW`` times larger (``Scheduler.done``).

The measured costs are published (``to_publish()``) so that producers can size
batches from them (``producer/sizing.py``). What is published is a low
estimate: the lowest of the function's average and its recent jobs' own costs.
A producer that believes a function dearer than it is cuts a job into many
small batches, each costing a fixed half millisecond; one that believes it
cheaper only lets batches run past ``producer.sizing.BATCH_SECONDS``, still at
least four per node, and the node cuts them into chunks as it measures.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping

from worker.core.batches import Batch, Chunk

TARGET_SECONDS = 0.05
#: early in a batch, chunks are aimed at up to this many seconds: chunks shrink
#: toward the batch's end (guided self-scheduling, ``guided``) to TARGET_SECONDS
LONGEST_SECONDS = 0.25
#: automatic chunks shrink below the chunksize at a batch's end, down to this
#: many seconds of work (``ChunkSizer.smallest``): the last chunk of a job runs
#: while the other processes idle, so it is kept short; a hand-off costs about
#: 0.2 ms, a few percent of it
TAIL_SECONDS = 0.01
#: chunks per process per batch, at least (when the batch has the items)
CHUNKS_PER_PROCESS = 2
#: weight of the newest measurement in the moving average
ALPHA = 0.3
#: a newly measured cost is published when it moved by more than this fraction ...
PUBLISH_CHANGE = 0.2
#: ... or when it was last published this many seconds ago (the key expires)
REPUBLISH_SECONDS = 3600.0
#: jobs whose own cost the node remembers, the most recently run
JOBS_REMEMBERED = 256
#: chunks not yet in the pool are re-cut when the job's own cost makes them this
#: many times larger
REGROW = 2


class ChunkSizer:
    def __init__(self, processes: int, fixed: int | None = None) -> None:
        self.processes = processes
        self.fixed = fixed
        self._cost: dict[str, float] = {}
        #: fn_ref -> (cost, when) last published
        self._published: dict[str, tuple[float, float]] = {}
        #: job id -> (fn_ref, items, seconds) the node ran of it, recent jobs only
        self._jobs: OrderedDict[str, tuple[str, int, float]] = OrderedDict()

    def cost(self, fn_ref: str) -> float | None:
        """Seconds per item measured for ``fn_ref``, or None before the first chunk."""
        return self._cost.get(fn_ref)

    def job_cost(self, job_id: str) -> float | None:
        """Seconds per item this node measured on ``job_id``'s own chunks, or None."""
        ran = self._jobs.get(job_id)
        return None if ran is None or ran[1] <= 0 else ran[2] / ran[1]

    def observe(self, fn_ref: str, items: int, seconds: float, job_id: str = "") -> None:
        if items <= 0:
            return
        seconds = max(0.0, seconds)
        per_item = seconds / items
        old = self._cost.get(fn_ref)
        self._cost[fn_ref] = per_item if old is None else old + ALPHA * (per_item - old)
        if job_id:
            _, done, took = self._jobs.pop(job_id, (fn_ref, 0, 0.0))
            self._jobs[job_id] = (fn_ref, done + items, took + seconds)
            while len(self._jobs) > JOBS_REMEMBERED:
                self._jobs.popitem(last=False)

    def automatic(self, asked: int = 0) -> bool:
        """Whether chunks are sized here (neither the job nor the node fixed them)."""
        return asked <= 0 and not self.fixed

    def chunksize(self, fn_ref: str, batch_items: int, asked: int = 0, job_id: str = "") -> int:
        """The chunksize for a batch: the job's, else the node's, else measured:
        on the job's own items once some ran, else on the function's."""
        if asked > 0:
            return asked
        if self.fixed:
            return self.fixed
        cap = max(1, math.ceil(batch_items / (self.processes * CHUNKS_PER_PROCESS)))
        cost = self.job_cost(job_id) if job_id else None
        if cost is None:
            cost = self._cost.get(fn_ref)
        if cost is None or cost <= 0:
            return cap
        return max(1, min(cap, int(TARGET_SECONDS / cost)))

    def low_cost(self, fn_ref: str) -> float | None:
        """The lowest of the function's average cost and its recent jobs' own."""
        cost = self._cost.get(fn_ref)
        if cost is None:
            return None
        for fn, items, seconds in self._jobs.values():
            if fn == fn_ref and items > 0:
                cost = min(cost, seconds / items)
        return cost

    def largest(self, fn_ref: str, batch_items: int, asked: int = 0, job_id: str = "") -> int:
        """The largest chunk of a batch, early in it (``guided``): as ``chunksize``
        but aimed at LONGEST_SECONDS; equal to it when the chunksize is fixed."""
        size, cost = self._measured(fn_ref, batch_items, asked, job_id)
        if cost is None:
            return size
        cap = max(1, math.ceil(batch_items / (self.processes * CHUNKS_PER_PROCESS)))
        return max(size, min(cap, int(LONGEST_SECONDS / cost)))

    def smallest(self, fn_ref: str, batch_items: int, asked: int = 0, job_id: str = "") -> int:
        """The smallest chunk of a batch, at its end (``guided``): as ``chunksize``
        but aimed at TAIL_SECONDS; equal to it when the chunksize is fixed."""
        size, cost = self._measured(fn_ref, batch_items, asked, job_id)
        if cost is None:
            return size
        return max(1, min(size, int(TAIL_SECONDS / cost)))

    def _measured(
        self, fn_ref: str, batch_items: int, asked: int, job_id: str
    ) -> tuple[int, float | None]:
        """The chunksize, and the cost per item to aim other chunks by: None when
        the chunksize is fixed or nothing was measured yet."""
        size = self.chunksize(fn_ref, batch_items, asked, job_id)
        if not self.automatic(asked):
            return size, None
        cost = (self.job_cost(job_id) if job_id else None) or self._cost.get(fn_ref)
        return size, cost if cost is not None and cost > 0 else None

    def to_publish(self, fn_ref: str, now: float) -> float | None:
        """The cost of ``fn_ref`` if it is new, moved enough or is due again since
        it was last published (then it counts as published), else None."""
        cost = self.low_cost(fn_ref)
        if cost is None:
            return None
        last = self._published.get(fn_ref)
        if (
            last is not None
            and abs(cost - last[0]) <= PUBLISH_CHANGE * last[0]
            and now - last[1] < REPUBLISH_SECONDS
        ):
            return None
        self._published[fn_ref] = (cost, now)
        return cost


def guided(count: int, small: int, large: int, processes: int) -> Iterator[tuple[int, int]]:
    """Bounds (lo, hi) of the chunks of a batch of ``count`` items: guided
    self-scheduling, each chunk ``remaining / (CHUNKS_PER_PROCESS * processes)``
    items, at most ``large`` and at least ``small``. Long chunks early cost
    fewer hand-offs (a node of many small processes on a loaded machine waits
    on each); short ones at the end keep the last chunk from running alone."""
    lo = 0
    while lo < count:
        share = -(-(count - lo) // (CHUNKS_PER_PROCESS * max(1, processes)))
        size = max(1, small, min(large, share))
        yield lo, min(count, lo + size)
        lo += size


def regrown(
    pending: Iterable[Chunk], grown: Mapping[int, Batch], processes: int
) -> Iterator[Chunk]:
    """``pending`` with the plain chunks of the batches in ``grown`` (by id) re-cut
    from their batch's ``chunk_large`` down to its ``chunk_size`` (``guided``):
    each batch's run of items that follow each other is cut anew where its first
    chunk stood; everything else keeps its place."""
    runs: dict[int, list[tuple[int, int]]] = {}
    for c in pending:
        if id(c.batch) in grown and c.retrying is None and not c.suspect:
            spans = runs.setdefault(id(c.batch), [])
            if spans and spans[-1][1] == c.lo:
                spans[-1] = (spans[-1][0], c.hi)
            else:
                spans.append((c.lo, c.hi))
    placed: set[int] = set()
    for c in pending:
        if id(c.batch) not in runs or c.retrying is not None or c.suspect:
            yield c
        elif id(c.batch) not in placed:
            placed.add(id(c.batch))
            small = max(1, c.batch.chunk_size)
            large = max(small, c.batch.chunk_large)
            for lo, hi in runs[id(c.batch)]:
                for a, b in guided(hi - lo, small, large, processes):
                    yield Chunk(c.batch, lo + a, lo + b)
