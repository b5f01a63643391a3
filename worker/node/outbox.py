"""Where a batch goes when the node is done with it: back to the source it came from.

A batch the node finished (or must let go of) leaves as a ``Completed``. The
outbox finds the source that owns it (``Source.owns``) and hands it over:
to record and acknowledge (``Source.complete``; the source answers with
``Written``), or, for a batch another node should run, straight back
(``Source.give_back``). It counts the batches out for recording, so the node
knows when nothing is left to write. Main thread only.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.core.batches import Completed, Delivery, key
from worker.core.scheduler import Scheduler
from worker.services.stats import NodeStats
from worker.sources.base import Source


class Outbox:
    def __init__(self, sources: Sequence[Source], scheduler: Scheduler, stats: NodeStats) -> None:
        self.sources = list(sources)
        self.scheduler = scheduler
        self.stats = stats
        #: batches given to their source to record, not written yet
        self.writing = 0

    def owner(self, delivery: Delivery) -> Source:
        """The source ``delivery`` came from."""
        for source in self.sources:
            if source.owns(delivery):
                return source
        raise LookupError(f"no source of this node owns queue {delivery.queue.name!r}")

    def complete_maybe(self, completed: Completed | None) -> None:
        if completed is not None:
            self.complete(completed)

    def complete(self, completed: Completed) -> None:
        source = self.owner(completed.delivery)
        if completed.give_back:
            # Another node may run it (worker.core.unrunnable): back now, its delivery undone.
            source.give_back(completed.delivery)
            self.stats.gave_back(completed.delivery.queue.name)
            return
        self.writing += 1  # until its source's Written
        source.complete(completed, self.scheduler.batches.get(key(completed.delivery)))

    def written(self, source: Source, completed: Completed) -> None:
        """``source`` recorded a batch (its ``Written``): it and the node forget it."""
        self.writing -= 1
        source.written(completed)
        self.scheduler.release(completed.delivery)
