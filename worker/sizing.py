"""How many items go into one pool message (the chunksize), per function.

The node measures each function's cost per item from the chunks it runs and
aims each chunk at ``TARGET_SECONDS``: long enough that pickling and IPC are
noise, short enough that a batch spreads over every process. A chunk never
holds more than its share of the batch, so small batches still use the pool.
"""

from __future__ import annotations

import math

TARGET_SECONDS = 0.05
#: weight of the newest measurement in the moving average
ALPHA = 0.3


class ChunkSizer:
    def __init__(self, processes: int, fixed: int | None = None) -> None:
        self.processes = processes
        self.fixed = fixed
        self._cost: dict[str, float] = {}

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
        share = max(1, math.ceil(batch_items / self.processes))
        cost = self._cost.get(fn_ref)
        if cost is None:
            # Unknown cost: small chunks first, so the measurement comes soon and a
            # slow function does not sit in one process.
            return max(1, math.ceil(share / 4))
        if cost <= 0:
            return share
        return max(1, min(share, int(TARGET_SECONDS / cost)))
