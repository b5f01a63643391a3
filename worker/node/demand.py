"""When a node reads batches, and from which of its sources.

The node reads only when its scheduler wants batches (``batches_wanted``: fewer
chunks wait locally than it has processes), and never while a stop is under
way. Each source (the taskfan queues' reader, the RQ source with
``--rq-queue``) has at most one read out at a time; both are asked for the
same number, and whichever answers first feeds the scheduler. Whether a read is
out, and whether the last came back empty, tell a burst node when it is done.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskfan.settings import Settings
from worker.core.scheduler import Scheduler

if TYPE_CHECKING:  # types only: the demand logic does no I/O itself
    from worker.node.io_threads import Reader
    from worker.sources.rq.rq_source import RqSource


class Demand:
    def __init__(
        self, settings: Settings, scheduler: Scheduler, reader: Reader, rq: RqSource | None
    ) -> None:
        self.settings = settings
        self.scheduler = scheduler
        self._reader = reader
        self._rq = rq
        self._reading = False  #: a read of the taskfan queues is out
        #: the last read found nothing, and nothing was held (an RQ-only node: no
        #: taskfan queue to read)
        self._last_read_empty = not settings.queues
        #: until when (monotonic seconds) the taskfan queues are not read: the
        #: last read held only batches this node cannot run (``worker.core.unrunnable``)
        self.paused_until: float | None = None

    def pause(self, now: float) -> None:
        """Read the taskfan queues again only after a heartbeat interval: every
        batch of the last read went back (functions this node cannot run), and
        reading again at once would take them back only to hand them back."""
        self.paused_until = now + self.settings.heartbeat_interval

    def ask(self, stopping: bool, now: float = 0.0) -> None:
        """Ask the readers for as many batches as the scheduler wants, if any."""
        rq_reading = self._rq is None or self._rq.reading
        if (self._reading and rq_reading) or stopping:
            return
        if self.paused_until is not None:
            if now < self.paused_until:
                want = self.scheduler.batches_wanted()
                if self._rq is not None and want:  # never for none: no read would answer
                    self._rq.request(want)
                return
            self.paused_until = None
        want = self.scheduler.batches_wanted()
        if not want:
            return
        if self._rq is not None:
            self._rq.request(want)  # no-op while its read is out
            if not self.settings.queues or self._reading:
                return
        self._reading = True
        self._reader.request(want)

    def read(self, found: bool) -> None:
        """A read of the taskfan queues came back, with batches or not."""
        self._reading = False
        self._last_read_empty = not found and not self.scheduler.batches

    def idle(self) -> bool:
        """No read is out."""
        return not self._reading and (self._rq is None or not self._rq.reading)

    def empty(self) -> bool:
        """Every source's last read found nothing."""
        return self._last_read_empty and (self._rq is None or self._rq.last_read_empty)
