"""Saying when nobody is listening (issue 14, item 6): a job waits on a queue no
live node serves, and ``taskfan status``, ``taskfan wait --progress``, the
dashboard's data, ``Job.wait`` and the ``Executor`` say so."""

from __future__ import annotations

import json
import logging

import fakeredis
import pytest
import redis

from producer import Client, Executor, events, listeners
from producer.listeners import NobodyWatch, serving
from producer.ops import overview
from taskfan import keys
from tests import tasks
from tests.cli_support import invoke
from tests.conftest import StartWorker
from tests.helpers import wait_until

SAID = "no live node serves queue default"


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waiters look often and warn after a second, not five."""
    monkeypatch.setattr(events, "BLOCK_SLICE", 0.3)
    monkeypatch.setattr(listeners, "NOBODY_AFTER", 1.0)
    monkeypatch.setattr(listeners, "CHECK_EVERY", 0.2)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if SAID in r.getMessage()]


def test_the_watch_says_it_at_once_and_warns_once_after_a_while(
    fake: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    watch = NobodyWatch(fake, "default", "job1", after=5.0, every=1.0, clock=lambda: now[0])
    assert watch.check() == SAID
    assert not warnings_of(caplog)
    for _ in range(10):
        now[0] += 1.0
        watch.check()
    assert len(warnings_of(caplog)) == 1
    assert "taskfan worker --queue default" in warnings_of(caplog)[0]
    fake.zadd(keys.NODES, {"n1": 1.0})
    fake.hset(keys.node("n1"), "queues", json.dumps(["other", "default"]))
    now[0] += 1.0
    assert watch.check() is None and serving(fake, "default") == 1
    assert serving(fake, "other") == 1 and serving(fake, "third") == 0


def test_status_says_no_live_node_serves_the_queue(client: Client, redis_url: str) -> None:
    job = client.map(tasks.square, range(3))
    shown = invoke("status", "--redis-url", redis_url)
    assert f"warning: {SAID}: 1 active jobs wait on it" in shown.stdout, shown.stdout
    one = invoke("status", job.id, "--redis-url", redis_url)
    assert SAID in one.stdout, one.stdout
    # the dashboard's data is the same gather()
    assert overview.gather(client.redis, 20)["warnings"] == [f"{SAID}: 1 active jobs wait on it"]


def test_status_is_quiet_when_a_node_serves_the_queue(
    client: Client, redis_url: str, start_worker: StartWorker, r: redis.Redis
) -> None:
    start_worker(processes=1)
    wait_until(lambda: r.zcard(keys.NODES) == 1, timeout=30)
    job = client.map(tasks.square, range(3))
    assert job.wait(timeout=30)
    client.map(tasks.sleep, [0.5])
    shown = invoke("status", "--redis-url", redis_url)
    assert SAID not in shown.stdout, shown.stdout
    assert overview.gather(client.redis, 20)["warnings"] == []


def test_wait_progress_says_no_live_node_serves_the_queue(client: Client, redis_url: str) -> None:
    job = client.map(tasks.square, range(3))
    waited = invoke("wait", job.id, "--progress", "--timeout", "2", "--redis-url", redis_url)
    assert waited.exit_code == 3
    assert SAID in waited.stderr, waited.stderr


def test_job_wait_logs_one_warning_after_a_few_seconds(
    quick: None, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    job = client.map(tasks.square, range(3))
    with caplog.at_level(logging.WARNING):
        assert not job.wait(timeout=3.0)
    said = warnings_of(caplog)
    assert len(said) == 1 and job.id in said[0]


def test_the_executor_logs_one_warning_after_a_few_seconds(
    quick: None, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        executor = Executor(redis_url)
        future = executor.submit(tasks.square, 3)
        wait_until(lambda: warnings_of(caplog), timeout=10)
        executor.shutdown(wait=False, cancel_futures=True)
    assert not future.done() or future.cancelled()
    assert len(warnings_of(caplog)) == 1


def test_a_first_look_late_in_the_wait_counts_from_the_start_of_the_wait(
    fake: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Waiters look on quiet block slices (5 s): one that finds nobody at its
    first look, 6 s in, has waited that long with nobody, and warns then."""
    now = [0.0]
    watch = NobodyWatch(fake, "default", "job1", after=5.0, clock=lambda: now[0])
    now[0] = 6.0
    assert watch.check() == SAID
    assert len(warnings_of(caplog)) == 1
