"""When a node reads, and from which source (``worker.node.demand``), with fake
sources: no Redis, no threads, the clock an argument."""

from __future__ import annotations

from typing import Any, cast

from worker.node.demand import Demand


class FakeScheduler:
    def __init__(self) -> None:
        self.want = 0
        self.batches: dict[Any, Any] = {}

    def batches_wanted(self) -> int:
        return self.want


class _FakeSource:
    def __init__(self) -> None:
        self.asked: list[int] = []

    def request(self, batches: int) -> None:
        self.asked.append(batches)


#: a stand-in for a ``Source``: only ``request`` is called (typed Any, as the
#: protocol's other methods are not there)
FakeSource: Any = _FakeSource


def _demand(*sources: Any) -> tuple[Demand, FakeScheduler]:
    scheduler = FakeScheduler()
    return Demand(cast(Any, scheduler), sources, rest_seconds=5.0), scheduler


def test_each_source_has_one_read_out_at_most() -> None:
    a, b = FakeSource(), FakeSource()
    demand, scheduler = _demand(a, b)
    scheduler.want = 3
    demand.ask(stopping=False, now=0.0)
    demand.ask(stopping=False, now=0.0)
    assert (a.asked, b.asked) == ([3], [3])
    assert not demand.idle()
    demand.read(a, found=True)
    demand.ask(stopping=False, now=0.0)
    assert (a.asked, b.asked) == ([3, 3], [3])


def test_nothing_is_asked_while_stopping_or_when_nothing_is_wanted() -> None:
    a = FakeSource()
    demand, scheduler = _demand(a)
    demand.ask(stopping=False, now=0.0)  # wants none
    scheduler.want = 2
    demand.ask(stopping=True, now=0.0)
    assert a.asked == [] and demand.idle()


def test_a_paused_source_leaves_the_others_reading_and_none_is_asked_for_nothing() -> None:
    """A source whose read went wholly to other nodes rests; another source is not
    asked for zero batches meanwhile (which left it waiting for an answer that
    never came: it was never read again), and reads once batches are wanted."""
    paused, other = FakeSource(), FakeSource()
    demand, scheduler = _demand(paused, other)
    demand.pause(paused, now=0.0)
    assert demand.paused_until == 5.0
    demand.ask(stopping=False, now=1.0)  # paused, and nothing wanted
    assert (paused.asked, other.asked) == ([], [])
    scheduler.want = 2
    demand.ask(stopping=False, now=1.0)  # still paused: only the other reads
    assert (paused.asked, other.asked) == ([], [2])
    demand.read(other, found=False)
    demand.ask(stopping=False, now=6.0)  # the pause is over
    assert (paused.asked, other.asked) == ([2], [2, 2])
    assert demand.paused_until is None


def test_a_burst_node_is_done_once_every_source_found_nothing() -> None:
    a, b = FakeSource(), FakeSource()
    demand, scheduler = _demand(a, b)
    scheduler.want = 1
    demand.ask(stopping=False, now=0.0)
    demand.read(a, found=False)
    assert not demand.empty()
    demand.read(b, found=True)
    assert not demand.empty()
    demand.ask(stopping=False, now=0.0)
    demand.read(b, found=False)
    assert demand.empty() and not demand.idle()  # a was asked again, not answered yet
    scheduler.batches = {"held": object()}
    demand.read(a, found=False)
    assert not demand.empty()  # nothing found, but batches are still held


def test_a_burst_node_asks_an_empty_source_again_only_once_no_other_read_is_out() -> None:
    """Re-asked at once, one source or the other would always have a read out,
    and a burst node of two sources would never end (tests/test_node_wiring.py)."""
    a, b = FakeSource(), FakeSource()
    scheduler = FakeScheduler()
    demand = Demand(cast(Any, scheduler), [a, b], rest_seconds=5.0, burst=True)
    scheduler.want = 1
    demand.ask(stopping=False, now=0.0)
    demand.read(a, found=False)  # a is empty; b's read is still out
    demand.ask(stopping=False, now=0.0)
    assert (a.asked, b.asked) == ([1], [1])
    demand.read(b, found=False)
    assert demand.idle() and demand.empty()  # the moment a burst node ends
    demand.ask(stopping=False, now=0.0)  # (a node that goes on: the next round)
    assert (a.asked, b.asked) == ([1, 1], [1, 1])


def test_a_node_that_serves_on_asks_an_empty_source_again_at_once() -> None:
    a, b = FakeSource(), FakeSource()
    demand, scheduler = _demand(a, b)
    scheduler.want = 1
    demand.ask(stopping=False, now=0.0)
    demand.read(a, found=False)
    demand.ask(stopping=False, now=0.0)
    assert (a.asked, b.asked) == ([1, 1], [1])
