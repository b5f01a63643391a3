"""When a node reads, and from which source (``worker.node.demand``), with fake
readers: no Redis, no threads, the clock an argument."""

from __future__ import annotations

from typing import Any

from taskfan.settings import Settings
from worker.node.demand import Demand


class FakeScheduler:
    def __init__(self) -> None:
        self.want = 0
        self.batches: dict[Any, Any] = {}

    def batches_wanted(self) -> int:
        return self.want


class FakeReader:
    def __init__(self) -> None:
        self.asked: list[int] = []

    def request(self, batches: int) -> None:
        self.asked.append(batches)


class FakeRq(FakeReader):
    """As the RQ source: a request is a no-op while its read is out."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = False
        self.last_read_empty = False

    def request(self, batches: int) -> None:
        if self.reading:
            return
        self.reading = True
        super().request(batches)


def test_a_paused_stream_leaves_rq_reading_and_rq_is_never_asked_for_nothing() -> None:
    """While the taskfan queues rest (their last read went wholly to other
    nodes), RQ is not asked for zero batches: that left it waiting for an
    answer that never came, and it was never read again."""
    settings = Settings(queues=("q",), rq_queues=("r",), heartbeat_interval=5)
    scheduler, reader, rq = FakeScheduler(), FakeReader(), FakeRq()
    demand = Demand(settings, scheduler, reader, rq)
    demand.pause(now=0.0)
    demand.ask(stopping=False, now=1.0)  # paused, and nothing wanted
    assert rq.asked == [] and demand.idle()
    scheduler.want = 2
    demand.ask(stopping=False, now=1.0)  # still paused: only RQ reads
    assert (reader.asked, rq.asked) == ([], [2])
    rq.reading = False  # its answer came
    demand.ask(stopping=False, now=6.0)  # the pause is over
    assert (reader.asked, rq.asked) == ([2], [2, 2])
