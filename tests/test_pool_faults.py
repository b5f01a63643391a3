"""The pool under a node failing outside any chunk: a pool process killed
while idle (by the OOM killer, an operator, a thread a task left behind), the
pool raising on submit while it breaks, and pool processes that will not exit
when the node replaces them (``max_tasks_per_child``) or stops. None of these
may stop the node or leave its batches unrun."""

from __future__ import annotations

import os
import signal
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from producer import Client
from taskfan.settings import Settings
from tests import tasks
from tests.conftest import StartWorker
from tests.helpers import wait_until
from tests.test_node_inprocess import FakeQueue, delivery, drive
from worker.node.node import Node
from worker.pool.process_pool import Pool


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_a_pool_process_killed_while_idle_does_not_wedge_the_node(
    start_worker: StartWorker, client: Client
) -> None:
    node = start_worker(processes=1)
    (pid,) = client.map(tasks.pid, [0]).results(timeout=60)
    os.kill(pid, signal.SIGKILL)  # the pool is idle: no chunk's callback will see it
    wait_until(lambda: _gone(pid), timeout=30, message=f"pool process {pid} gone")
    job = client.map(tasks.square, range(4))
    assert list(job.results(timeout=60)) == [0, 1, 4, 9], node.log()
    assert node.proc.poll() is None
    assert "a pool process died while idle (signal 9 (SIGKILL))" in node.log()


def test_a_pool_that_raises_on_submit_is_rebuilt_and_the_node_lives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CPython's pool can raise what is not BrokenProcessPool from submit, when a
    process dies as the chunk goes in (3.11: ``OSError: handle is closed``, its
    manager thread closing the queue a new process is given)."""
    real = Pool.submit
    raised: list[str] = []

    def once(self: Pool, fn: Any, *args: Any) -> Future[Any]:
        if not raised:
            raised.append("once")
            raise OSError("handle is closed")
        return real(self, fn, *args)

    monkeypatch.setattr(Pool, "submit", once)
    fake = FakeQueue([delivery(0, [0.01, 0.01])])
    settings = Settings(processes=1, heartbeat_interval=0.2, block_seconds=0.2, burst=True)
    node = Node(settings, node_redis=fake)
    assert drive(node, lambda: None) == 0
    assert raised == ["once"]
    assert [(c.ok, c.failed) for c in fake.written] == [(2, 0)]


def test_pool_processes_that_will_not_exit_are_killed_when_replaced_and_at_stop(
    start_worker: StartWorker, client: Client
) -> None:
    """A task that leaves a non-daemon thread makes its process wait for it at
    exit: the node, replacing that process under max_tasks_per_child, or
    stopping, kills it after a while instead of waiting for it forever."""
    node = start_worker("--max-tasks-per-child", "1", processes=1)
    first = client.map(tasks.stray_thread, range(3), batch_size=1, chunksize=1)
    assert list(first.results(timeout=120)) == [0, 1, 2], node.log()
    second = client.map(tasks.square, range(3), batch_size=1, chunksize=1)
    assert list(second.results(timeout=120)) == [0, 1, 4], node.log()
    wait_until(lambda: "did not exit" in node.log(), timeout=60, message=node.log)
    client.map(tasks.stray_thread, [0]).wait(timeout=60)
    assert node.stop(timeout=60) == 0, node.log()


def test_a_node_stops_even_when_a_task_left_a_thread_in_its_pool(
    start_worker: StartWorker, client: Client
) -> None:
    node = start_worker(processes=1)
    assert list(client.map(tasks.stray_thread, [0]).results(timeout=60)) == [0]
    assert node.stop(timeout=60) == 0, node.log()
