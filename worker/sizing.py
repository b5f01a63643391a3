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

The measured costs are published (``published()``) so that producers can size
batches from them (``producer/sizing.py``).
"""

from __future__ import annotations

import math

TARGET_SECONDS = 0.05
#: chunks per process per batch, at least (when the batch has the items)
CHUNKS_PER_PROCESS = 2
#: weight of the newest measurement in the moving average
ALPHA = 0.3
#: a newly measured cost is published when it moved by more than this fraction ...
PUBLISH_CHANGE = 0.2
#: ... or when it was last published this many seconds ago (the key expires)
REPUBLISH_SECONDS = 3600.0


class ChunkSizer:
    def __init__(self, processes: int, fixed: int | None = None) -> None:
        self.processes = processes
        self.fixed = fixed
        self._cost: dict[str, float] = {}
        #: fn_ref -> (cost, when) last published
        self._published: dict[str, tuple[float, float]] = {}

    def cost(self, fn_ref: str) -> float | None:
        """Seconds per item measured for ``fn_ref``, or None before the first chunk."""
        return self._cost.get(fn_ref)

    def observe(self, fn_ref: str, items: int, seconds: float) -> None:
        if items <= 0:
            return
        per_item = seconds / items
        old = self._cost.get(fn_ref)
        self._cost[fn_ref] = per_item if old is None else old + ALPHA * (per_item - old)

    def chunksize(self, fn_ref: str, batch_items: int, asked: int = 0) -> int:
        """The chunksize for a batch: the job's, else the node's, else measured."""
        if asked > 0:
            return asked
        if self.fixed:
            return self.fixed
        cap = max(1, math.ceil(batch_items / (self.processes * CHUNKS_PER_PROCESS)))
        cost = self._cost.get(fn_ref)
        if cost is None or cost <= 0:
            return cap
        return max(1, min(cap, int(TARGET_SECONDS / cost)))

    def to_publish(self, fn_ref: str, now: float) -> float | None:
        """The cost of ``fn_ref`` if it is new, moved enough or is due again since
        it was last published (then it counts as published), else None."""
        cost = self._cost.get(fn_ref)
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
