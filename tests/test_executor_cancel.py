"""``Executor`` futures: a cancelled call never runs, a call a node took cannot
be cancelled, and ``running()`` is True while a node has it (issue 17)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import redis

from producer import Executor
from taskfan import keys
from tests import tasks
from tests.conftest import StartWorker
from tests.helpers import wait_until
from tests.stdlib_futures import calls
from tests.stdlib_futures.calls import FileEvent
from worker.sources.streams.held_entries import HeldEntries
from worker.sources.streams.redis_io import NodeRedis


def _until(condition: object, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_cancelled_call_never_runs(
    redis_url: str, start_worker: StartWorker, r: redis.Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    with Executor(redis_url) as executor:
        future = executor.submit(tasks.touch, str(marker))  # no node yet: still queued
        stream = keys.QueueKeys("default").stream
        wait_until(lambda: r.xlen(stream) == 1, 30, message="the call queued")
        assert future.cancel()
        assert future.cancelled()
        start_worker()
        assert executor.submit(tasks.add, 1, 2).result(timeout=60) == 3  # the node serves
    assert not marker.exists()
    # the job still completes: the cancelled call counts as failed
    listed: Any = r.zrange(keys.QueueKeys("default").jobs, 0, -1)
    (job_id,) = [j.decode() for j in listed]
    meta = executor.client.job(job_id).meta()
    assert (meta.state.value, meta.ok, meta.failed) == ("finished", 1, 1)


def test_a_call_a_node_runs_is_running_and_cannot_be_cancelled(
    redis_url: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker()
    event = FileEvent(str(tmp_path / "go"))
    with Executor(redis_url) as executor:
        future = executor.submit(calls.wait_for, event)
        _until(future.running, "the future never turned running")
        assert not future.cancel()
        assert future.running() and not future.cancelled()
        event.set()
        assert future.result(timeout=60) is True


def test_a_call_read_while_the_writer_looks_on_its_own_turns_running(
    redis_url: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    """A call read within a second of the one before does not wake the node's
    writer (``worker.sources.streams.announcements``): the writer finds its
    announcement due on its own, and the future turns running all the same."""
    start_worker()
    event = FileEvent(str(tmp_path / "go"))
    with Executor(redis_url) as executor:
        assert executor.submit(tasks.add, 1, 2).result(timeout=60) == 3
        future = executor.submit(calls.wait_for, event)
        _until(future.running, "the future never turned running")
        event.set()
        assert future.result(timeout=60) is True


def test_a_call_handed_back_can_be_cancelled(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, tmp_path: Path
) -> None:
    """A node that took a call and handed it back unrun (it could not run it, or
    stopped) does not run it: the call waits in the queue again and can be
    cancelled, and then never runs."""
    marker = tmp_path / "ran"
    node = NodeRedis(r, ["default"], "n1")  # a node's own Redis I/O, driven by hand
    node.prepare()
    with Executor(redis_url) as executor:
        future = executor.submit(tasks.touch, str(marker))
        (delivery,) = node.read(1, 0)  # taken
        node.announce_calls([delivery])  # as the node's reader does: its future turns running
        _until(future.running, "the future never turned running")
        assert not future.cancel()  # held by the node: it may be running
        held = HeldEntries(node, visibility_timeout=30)
        held.hold(delivery)
        held.give_back(delivery)  # as a node that cannot run it
        _until(lambda: not future.running(), "the future stayed running")  # h= event
        assert future.cancel()
        assert future.cancelled()
        start_worker()
        assert executor.submit(tasks.add, 1, 2).result(timeout=60) == 3  # the node serves
    assert not marker.exists()
    assert node.reclaim(4, 0) == []  # nothing left to reclaim either


def test_a_call_handed_back_turns_running_again_when_another_node_takes_it(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    first, second = NodeRedis(r, ["default"], "n1"), NodeRedis(r, ["default"], "n2")
    first.prepare()
    with Executor(redis_url) as executor:
        future = executor.submit(tasks.touch, str(tmp_path / "ran"))
        (delivery,) = first.read(1, 0)
        first.announce_calls([delivery])  # as the node's reader does
        _until(future.running, "the future never turned running")
        held = HeldEntries(first, visibility_timeout=30)
        held.hold(delivery)
        held.give_back(delivery)
        _until(lambda: not future.running(), "the future stayed running")
        (taken,) = second.reclaim(4, 0)  # another node takes it: s= again
        second.announce_calls([taken])
        _until(future.running, "the future did not turn running again")
        assert not future.cancel()  # held by the second node
        again = HeldEntries(second, visibility_timeout=30)
        again.hold(taken)
        again.give_back(taken)
        _until(lambda: not future.running(), "the future stayed running")
        assert future.cancel()  # so that the with block has nothing to wait for
