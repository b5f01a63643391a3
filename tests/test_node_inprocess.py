"""A node driven in-process: a fake queue in place of its Redis I/O, a real pool.

``Node(settings, node_redis=...)`` takes its Redis I/O from the caller, so a
test can hand a node batches and watch what it records and hands back without
a server or a subprocess, while its threads, scheduler, demand, stopping logic
and process pool run for real.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import fakeredis
import pytest

from taskfan.keys import QueueKeys
from taskfan.options import CallMode, TaskOptions
from taskfan.protocol import BatchEntry
from taskfan.settings import Settings
from tests.helpers import wait_until
from worker.core.batches import Completed, Delivery, key
from worker.node.node import Node
from worker.sources.streams.redis_io import NodeRedis

QUEUE = QueueKeys("default")


def delivery(index: int, items: list[object]) -> Delivery:
    """Batch ``index`` of job ``job1``: ``tests.tasks.sleep`` on each item."""
    entry = BatchEntry(
        job_id="job1", index=index, start=index * 100, count=len(items),
        fn_ref="tests.tasks:sleep", codec="pickle", mode=CallMode.ONE, chunksize=1,
        payload=pickle.dumps(items), options=TaskOptions(),
    )  # fmt: skip
    fields = {
        k.encode(): v if isinstance(v, bytes) else str(v).encode()
        for k, v in entry.fields().items()
    }
    return Delivery(QUEUE, f"1-{index}".encode(), fields)


class FakeQueue(NodeRedis):
    """A node's Redis I/O with no Redis: it hands out ``batches`` one per read,
    and keeps what the node recorded and handed back."""

    def __init__(self, batches: Sequence[Delivery]) -> None:
        super().__init__(fakeredis.FakeRedis(), [QUEUE.name], "in-process-node")
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.waiting = list(batches)
        self.handed_out: list[Delivery] = []
        self.written: list[Completed] = []
        self.handed_back: list[bytes] = []

    def prepare(self) -> None:
        pass

    def interrupt(self) -> None:
        self._wake.set()

    def read(self, count: int, block_ms: int) -> list[Delivery]:
        with self._lock:
            found, self.waiting = self.waiting[:1], self.waiting[1:]
            self.handed_out += found
        if not found:
            self._wake.wait(block_ms / 1000)
            self._wake.clear()
        return found

    def reclaim(self, count: int, min_idle_ms: int) -> list[Delivery]:
        return []

    def write(self, done: Sequence[Completed], now: float) -> None:
        with self._lock:
            self.written += done

    def refresh(self, entries: dict[QueueKeys, list[Any]]) -> None:
        pass

    def hand_back(
        self, entries: dict[QueueKeys, list[Any]], idle_ms: int, deliveries: int | None = None
    ) -> None:
        with self._lock:
            self.handed_back += [entry for ids in entries.values() for entry in ids]

    def ended(self, job_ids: Sequence[str]) -> dict[str, str]:
        return {}

    def abandon_lapsed(self) -> dict[str, str]:
        return {}

    def publish(self, record: dict[str, Any], ttl: float) -> None:
        pass

    def unpublish(self) -> None:
        pass


def drive(node: Node, script: Callable[[], None], timeout: float = 60) -> int:
    """Run ``node`` in this (the main) thread while ``script`` runs in another,
    and return the node's exit code; ``script``'s failure is raised here.

    The node runs in the main thread as it does for real: its pool processes and
    their forkserver die with the thread that started them (``taskfan.lifeline``),
    so a node run in a thread that ends would kill the forkserver under the next
    test's pool. Should the node not stop, it is stopped cold after ``timeout``.
    """
    failures: list[BaseException] = []
    done = threading.Event()

    def play() -> None:
        try:
            script()
        except BaseException as exc:  # raised in the test's thread, below
            failures.append(exc)
            node.stop(cold=True)
        if not done.wait(timeout):
            failures.append(AssertionError(f"the node did not stop within {timeout} s"))
            node.stop(cold=True)

    player = threading.Thread(target=play, daemon=True)
    player.start()
    try:
        code = node.run()
    finally:
        done.set()
        player.join(timeout=30)
    if failures:
        raise failures[0]
    return code


def test_a_stopping_node_finishes_what_runs_and_hands_back_what_did_not_start() -> None:
    # One process (two chunks in the pool at most): batch 0's two chunks fill it,
    # so batch 1, read next, waits with nothing started; batch 2 is never read.
    batches = [delivery(i, [1.5, 1.5]) for i in range(3)]
    fake = FakeQueue(batches)
    settings = Settings(processes=1, heartbeat_interval=0.2, block_seconds=0.2, grace_period=60)
    node = Node(settings, node_redis=fake)
    started: set[int] = set()

    def stop_while_batch_1_waits() -> None:
        wait_until(lambda: key(batches[1]) in node.scheduler.batches, timeout=60,
                   message="the node holds batch 1")  # fmt: skip
        started.update(chunk.batch.entry.index for chunk in list(node.scheduler.in_pool))
        node.stop()

    assert drive(node, stop_while_batch_1_waits) == 0
    assert started == {0}  # what the assertions below rely on
    # Batch 0 ran to its end and was recorded; batch 1 went back unstarted and
    # unrecorded; batch 2 was never read.
    assert [c.delivery.entry_id for c in fake.written] == [b"1-0"]
    assert (fake.written[0].ok, fake.written[0].failed) == (2, 0)
    assert fake.handed_back == [b"1-1"]
    assert [d.entry_id for d in fake.handed_out] == [b"1-0", b"1-1"]
    assert not node.scheduler.batches


class GreedyQueue(FakeQueue):
    """A fake queue that hands out as many batches as a read asks for."""

    def read(self, count: int, block_ms: int) -> list[Delivery]:
        with self._lock:
            found, self.waiting = self.waiting[:count], self.waiting[count:]
            self.handed_out += found
        if not found:
            self._wake.wait(block_ms / 1000)
            self._wake.clear()
        return found


def test_a_stopping_node_hands_back_every_batch_it_did_not_start() -> None:
    # Two processes: the first read asks for four batches; batches 0 and 1 fill
    # the pool (two chunks each), 2 and 3 wait with nothing started.
    batches = [delivery(i, [1.5, 1.5]) for i in range(4)]
    fake = GreedyQueue(batches)
    settings = Settings(processes=2, heartbeat_interval=0.2, block_seconds=0.2, grace_period=60)
    node = Node(settings, node_redis=fake)
    started: set[int] = set()

    def stop_while_two_wait() -> None:
        wait_until(lambda: len(node.scheduler.batches) == 4 and len(node.scheduler.in_pool) == 4,
                   timeout=60, message="four batches held, two of them in the pool")  # fmt: skip
        started.update(chunk.batch.entry.index for chunk in list(node.scheduler.in_pool))
        node.stop()

    assert drive(node, stop_while_two_wait) == 0
    assert started == {0, 1}  # what the assertions below rely on
    assert sorted(c.delivery.entry_id for c in fake.written) == [b"1-0", b"1-1"]
    # Both went back at once, not only the last of the queue's.
    assert sorted(fake.handed_back) == [b"1-2", b"1-3"]


def test_the_fake_queue_is_what_the_node_uses() -> None:
    """No connection is made: the node takes its id and client from the fake."""
    fake = FakeQueue([])
    node = Node(Settings(processes=1), node_redis=fake)
    assert node.redis is fake and node.id == "in-process-node"


def test_a_burst_node_reads_on_demand_records_each_batch_once_and_ends_when_empty() -> None:
    batches = [delivery(i, [0.01] * 3) for i in range(5)]
    fake = FakeQueue(batches)
    settings = Settings(processes=2, heartbeat_interval=0.2, block_seconds=0.2, burst=True)
    node = Node(settings, node_redis=fake)
    assert drive(node, lambda: None) == 0  # it ends by itself
    assert sorted(c.delivery.entry_id for c in fake.written) == [d.entry_id for d in batches]
    assert all((c.ok, c.failed) == (3, 0) for c in fake.written)
    assert fake.handed_back == []


def test_a_batch_s_line_is_logged_under_the_node_s_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Operators filter a node's batch lines by the logger name ``worker.node``
    (docs/operations.md), whichever module writes them."""
    fake = FakeQueue([delivery(0, [0.01])])
    settings = Settings(processes=1, heartbeat_interval=0.2, block_seconds=0.2, burst=True)
    with caplog.at_level(logging.INFO):
        assert drive(Node(settings, node_redis=fake), lambda: None) == 0
    lines = [r for r in caplog.records if r.getMessage().startswith("job job1 batch 0: 1 items")]
    assert [r.name for r in lines] == ["worker.node"], caplog.text


def test_a_cold_stop_hands_back_the_batch_that_runs_too() -> None:
    fake = FakeQueue([delivery(0, [30.0, 30.0])])
    settings = Settings(processes=1, heartbeat_interval=0.2, block_seconds=0.2)
    node = Node(settings, node_redis=fake)

    def stop_cold_while_it_runs() -> None:
        wait_until(lambda: node.scheduler.in_pool, timeout=60, message="batch 0 in the pool")
        node.stop(cold=True)

    assert drive(node, stop_cold_while_it_runs, timeout=20) == 0
    assert fake.written == []  # nothing recorded: another node runs it all again
    assert fake.handed_back == [b"1-0"]


class Clock:
    """A monotonic clock a test moves on by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_graceful_stop_turns_cold_when_the_node_s_clock_passes_its_grace_period() -> None:
    fake = FakeQueue([delivery(0, [30.0, 30.0])])
    clock = Clock()
    # Two minutes of grace: only the node's own clock can end them within the test.
    settings = Settings(processes=1, heartbeat_interval=0.2, block_seconds=0.2, grace_period=120)
    node = Node(settings, node_redis=fake, clock=clock)
    graceful: list[bool] = []

    def stop_then_let_the_grace_period_pass() -> None:
        wait_until(lambda: node.scheduler.in_pool, timeout=60, message="batch 0 in the pool")
        node.stop()  # graceful: batch 0 runs on, within its grace period
        time.sleep(0.5)  # (a stretch of the node's loop, not a synchronisation)
        graceful.append(bool(node.scheduler.in_pool) and not fake.handed_back)
        clock.now += 121  # the grace period is over by the node's clock
        node.stop()  # (wakes its loop, which reads the clock)

    assert drive(node, stop_then_let_the_grace_period_pass, timeout=20) == 0
    assert graceful == [True]  # it had not given up batch 0 before its clock said so
    assert fake.written == []
    assert fake.handed_back == [b"1-0"]
