"""A node's stopping, demand and hand-back logic, driven in-process.

The node is wired as for real (``worker.node.wiring.wire``), its process pool
real, with fake sources in place of Redis (``tests.fake_source``): what these
tests check was only seen through subprocesses before (``tests/test_reliability.py``,
``tests/test_retries_node.py``, ``tests/test_end_to_end.py``), where a test can
read a log but not ask the node which source got what.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from taskfan.options import CallMode, TaskOptions
from taskfan.settings import Settings
from tests.fake_source import FakeSource, Job, fake_node
from tests.helpers import wait_until
from tests.test_node_inprocess import FakeQueue, drive
from worker.node.node import Node
from worker.node.wiring import wire
from worker.sources.base import NodeParts, Source


def test_a_node_is_run_by_the_collaborators_it_is_given() -> None:
    made: list[FakeSource] = []

    def sources(parts: NodeParts) -> list[Source]:
        made.append(FakeSource(parts, [[0.01]]))
        return list(made)

    settings = Settings(processes=1, heartbeat_interval=0.2, block_seconds=0.2, burst=True)
    wiring = wire(settings, FakeQueue([]), sources=sources)
    node = Node(settings, wiring=wiring)
    assert node.sources == made and node.scheduler is wiring.scheduler
    assert node.view is wiring.view and node.events is wiring.events
    assert drive(node, lambda: None) == 0
    assert made[0].recorded == {b"fake-0": [0.01]}
    # the view reads the node's own books: nothing held once it ended
    assert node.view.record()["busy"] == 0 and node.view.batches() == []


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    """The test process's SIGTERM and SIGINT handlers, restored after the test."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_sigterm_stops_gracefully_and_a_second_one_hands_back_what_runs(
    signal_handlers: None,
) -> None:
    node, (source,) = fake_node(partial(FakeSource, batches=[[30.0, 30.0]]), grace_period=120)
    node.install_signal_handlers()
    graceful: list[bool] = []

    def two_signals() -> None:
        wait_until(lambda: node.scheduler.in_pool, timeout=60, message="the batch in the pool")
        # Its handler runs in the main thread, where the node waits for an event: a
        # signal that lands as it starts to wait wakes it all the same (SignalWaker).
        os.kill(os.getpid(), signal.SIGTERM)
        source.stopped_reading.wait(30)
        graceful.append(not source.handed_back and not source.closed.is_set())
        os.kill(os.getpid(), signal.SIGTERM)

    assert drive(node, two_signals, timeout=30) == 0
    assert graceful == [True]  # the first one let the batch run on
    assert source.recorded == {}
    # the second stopped cold: the running batch went to its source to settle
    assert source.settled == [(True, [(b"fake-0", [])])]


def test_a_stop_gives_back_at_once_a_batch_whose_retry_falls_after_the_grace_period(
    tmp_path: Path,
) -> None:
    counter = tmp_path / "calls"
    job = Job("tests.tasks:fail_times", CallMode.STAR,
              TaskOptions(retries=1, backoff=120.0, backoff_max=120.0))  # fmt: skip
    node, (source,) = fake_node(
        partial(FakeSource, batches=[[[str(counter), 1]]], job=job), grace_period=60
    )

    def stop_while_the_retry_waits() -> None:
        wait_until(lambda: node.scheduler.retries.pending == 1, timeout=60,
                   message="the item waiting out its backoff")  # fmt: skip
        node.stop()

    # A node that waited out its grace period would outlive the 30 s given.
    assert drive(node, stop_while_the_retry_waits, timeout=30) == 0
    assert source.handed_back == [b"fake-0"] and source.recorded == {}
    assert counter.read_text() == "1"  # the retry never ran here


def test_a_stop_runs_a_retry_due_within_the_grace_period(tmp_path: Path) -> None:
    counter = tmp_path / "calls"
    job = Job("tests.tasks:fail_times", CallMode.STAR,
              TaskOptions(retries=1, backoff=0.5, backoff_max=0.5))  # fmt: skip
    node, (source,) = fake_node(
        partial(FakeSource, batches=[[[str(counter), 1]]], job=job), grace_period=60
    )

    def stop_while_the_retry_waits() -> None:
        wait_until(lambda: node.scheduler.retries.pending == 1, timeout=60,
                   message="the item waiting out its backoff")  # fmt: skip
        node.stop()

    assert drive(node, stop_while_the_retry_waits, timeout=30) == 0
    assert source.recorded == {b"fake-0": [2]}  # its second call, within the grace period
    assert source.handed_back == []


def test_a_burst_node_reads_every_source_and_each_batch_goes_back_to_its_own() -> None:
    node, (first, second) = fake_node(
        partial(FakeSource, batches=[[0.01]], name="a"),
        partial(FakeSource, batches=[[0.01, 0.02], [0.03], [0.04]], name="b"),
        burst=True,
    )
    assert drive(node, lambda: None) == 0  # it ends once both found nothing
    assert first.recorded == {b"a-0": [0.01]}
    assert second.recorded == {b"b-0": [0.01, 0.02], b"b-1": [0.03], b"b-2": [0.04]}
    assert {entry for entry, _, _ in first.started_items} == {b"a-0"}
    assert first.requests >= 2 and second.requests >= 4  # each asked until it found nothing


def test_a_cold_stop_settles_each_held_batch_with_what_ran_of_it() -> None:
    node, (source,) = fake_node(partial(FakeSource, batches=[[0.01, 30.0]]))

    def stop_cold_after_the_first_item() -> None:
        wait_until(lambda: any(b.blobs for b in node.scheduler.batches.values()), timeout=60,
                   message="the first item's result")  # fmt: skip
        node.stop(cold=True)

    assert drive(node, stop_cold_after_the_first_item, timeout=30) == 0
    # the source gets the batch with the part that ran (offset 0), to record or hand back
    assert source.settled == [(True, [(b"fake-0", [0])])]
    assert source.recorded == {}


def test_a_batch_this_node_cannot_import_goes_back_to_its_source() -> None:
    job = Job("tests.no_such_module_here:fn")
    node, (source,) = fake_node(partial(FakeSource, batches=[[1, 2]], job=job), burst=True)
    assert drive(node, lambda: None) == 0
    assert source.given_back == [b"fake-0"]  # for a node that can, its delivery undone
    assert source.recorded == {} and source.handed_back == []
    assert "tests.no_such_module_here:fn" in node.unrunnable.published()


def test_a_read_that_lands_after_the_loop_ended_goes_back_to_its_source() -> None:
    node, (source,) = fake_node(partial(FakeSource, batches=[[30.0]], answer_late=True))

    def stop_cold_while_a_read_is_out() -> None:
        wait_until(lambda: source.requests, timeout=60, message="a read asked for")
        node.stop(cold=True)

    assert drive(node, stop_cold_while_a_read_is_out, timeout=30) == 0
    # the read came back as the source closed: its batch is the source's to put back
    assert source.late == [b"fake-0"]
    assert source.recorded == {} and source.started_items == []
