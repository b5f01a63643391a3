"""When a node reads batches, and from which of its sources.

The node reads only when its scheduler wants batches (``batches_wanted``: fewer
chunks wait locally than it has processes), and never while a stop is under
way. Each source (``worker.sources.base.Source``) has at most one read out at a
time; every source without one is asked for the same number, and whichever
answers first feeds the scheduler. A source whose last read went wholly to
other nodes (functions this node cannot run) rests for a heartbeat interval.
Whether a read is out, and whether the last came back empty, tell a burst node
when it is done. So a burst node asks a source whose last read found nothing
again only once no other read is out: re-asked at once, one source or another
would always have a read out, and a node of two sources would never see them
all empty at the same time, nor end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.core.scheduler import Scheduler

if TYPE_CHECKING:  # types only: the demand logic does no I/O itself
    from worker.sources.base import Source


@dataclass
class Reads:
    """One source's reads, as the demand sees them."""

    #: a read is out (asked, not answered yet)
    out: bool = False
    #: the last read found nothing, and nothing was held
    empty: bool = False
    #: until when (monotonic seconds) the source is not read: its last read held
    #: only batches this node cannot run (``worker.core.unrunnable``)
    paused_until: float | None = None


class Demand:
    def __init__(
        self,
        scheduler: Scheduler,
        sources: Sequence[Source],
        rest_seconds: float,
        burst: bool = False,
    ) -> None:
        self.scheduler = scheduler
        #: how long a source rests after a read that went wholly to other nodes
        self.rest_seconds = rest_seconds
        #: the node ends once every source is empty: read them in rounds
        self.burst = burst
        self._reads = {source: Reads() for source in sources}

    def pause(self, source: Source, now: float) -> None:
        """Read ``source`` again only after a heartbeat interval: every batch of
        its last read went back (functions this node cannot run), and reading
        again at once would take them back only to hand them back."""
        self._reads[source].paused_until = now + self.rest_seconds

    @property
    def paused_until(self) -> float | None:
        """When the earliest pause ends (the loop wakes then), if any."""
        ends = [r.paused_until for r in self._reads.values() if r.paused_until is not None]
        return min(ends) if ends else None

    def ask(self, stopping: bool, now: float = 0.0) -> None:
        """Ask each source without a read out for as many batches as the
        scheduler wants, if any."""
        if stopping:
            return
        want: int | None = None
        others_out = not self.idle()
        for source, reads in self._reads.items():
            if reads.out or (self.burst and reads.empty and others_out):
                continue
            if reads.paused_until is not None:
                if now < reads.paused_until:
                    continue
                reads.paused_until = None
            if want is None:
                want = self.scheduler.batches_wanted()
            if not want:
                return
            reads.out = True
            source.request(want)

    def read(self, source: Source, found: bool) -> None:
        """A read of ``source`` came back, with batches or not (before the node
        takes them in)."""
        reads = self._reads[source]
        reads.out = False
        reads.empty = not found and not self.scheduler.batches

    def idle(self) -> bool:
        """No read is out."""
        return not any(reads.out for reads in self._reads.values())

    def empty(self) -> bool:
        """Every source's last read found nothing."""
        return all(reads.empty for reads in self._reads.values())
