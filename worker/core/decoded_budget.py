"""The node's budget for decoded items: what the batches it holds may take once
decoded, by the estimate ``taskfan.limits.decoded_size`` makes from a payload's
bytes before anything is decoded.

A batch estimated over the whole budget (``max_decoded_bytes``) is refused
before this (``worker.core.entry_checks``). Any other batch is decoded at once when the
node holds nothing, or when it fits beside what the node holds; if not, it
waits here, held (its lease renewed) but undecoded, in the order it came, until
batches are released; meanwhile the node reads no more. So the decoded items a
node holds never take more than the budget, by the estimate; a batch counts
until it is released, though its items are freed as they settle.
"""

from __future__ import annotations

from collections import deque

from worker.core.batches import Batch


class DecodedBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: the estimates of the batches decoded and held, summed
        self.held = 0
        #: batches read but not decoded yet, oldest first
        self.parked: deque[Batch] = deque()
        self._counted: set[int] = set()

    def fits(self, batch: Batch) -> bool:
        """Whether the batch may be decoded now."""
        return not self.held or self.held + batch.decoded <= self.limit

    def full(self) -> bool:
        """Read nothing more: batches wait, or the budget is spent."""
        return bool(self.parked) or self.held >= self.limit

    def count(self, batch: Batch) -> None:
        self._counted.add(id(batch))
        self.held += batch.decoded

    def uncount(self, batch: Batch) -> None:
        if id(batch) in self._counted:
            self._counted.discard(id(batch))
            self.held -= batch.decoded
