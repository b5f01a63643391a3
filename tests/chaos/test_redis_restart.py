"""Chaos: Redis crashes (SIGKILL) and restarts from its append-only file mid-job."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from producer import Client
from taskfan.server import RedisServer
from tests import tasks
from tests.chaos.census import census, recorded_at
from tests.chaos.conftest import Report
from tests.conftest import StartWorker
from tests.helpers import wait_until

pytestmark = pytest.mark.chaos

ITEMS = 12_000
BATCH = 100
DOWN = 1.0  #: seconds Redis stays down
ENV = {"TASKFAN_VISIBILITY_TIMEOUT": "2", "TASKFAN_HEARTBEAT_INTERVAL": "0.5"}


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    """A server of the test's own, that writes every command to its AOF before replying."""
    with RedisServer(appendonly=True, extra_args=("--appendfsync", "always")) as server:
        yield server


def test_a_redis_restart_mid_job_loses_nothing(durable_redis: RedisServer, report: Report) -> None:
    server = durable_redis
    r = redis.Redis.from_url(server.url)
    starter = StartWorker(server.url)
    try:
        nodes = [starter(processes=1, env=ENV) for _ in range(2)]
        job = Client.from_url(server.url).map(tasks.nap_square, range(ITEMS), batch_size=BATCH)
        # A producer blocked on the job's results, from before the crash to the end.
        waited: dict[str, Any] = {}

        def wait_for_results() -> None:
            try:
                waited["values"] = list(job.results(timeout=120))
            except BaseException as exc:
                waited["error"] = exc

        waiter = threading.Thread(target=wait_for_results, daemon=True)
        waiter.start()
        wait_until(lambda: job.progress().done >= ITEMS // 3, timeout=60,
                   message="a third of the job done")  # fmt: skip
        done_before = job.progress().done
        down_at = time.time()  # our own server, on this machine: the same clock
        server.kill()
        # The outage lasts DOWN seconds; the producer must keep waiting through it.
        waiter.join(timeout=DOWN)
        assert waiter.is_alive(), f"the waiting producer gave up: {waited}"
        server.restart()
        up_at = time.time()
        waiter.join(timeout=120)
        assert not waiter.is_alive(), "the waiting producer is still waiting"
        assert "error" not in waited, f"the waiting producer failed: {waited.get('error')!r}"

        first_after = min(t for t in recorded_at(r, job.id).values() if t > down_at)
        logs = [node.log() for node in nodes]
        found = census(r, job.id, expected=lambda i: i * i)
        report(
            "Redis SIGKILLed and restarted (appendfsync always) mid-job",
            items=ITEMS,
            done_at_crash=done_before,
            lost=found.lost,
            duplicated=found.duplicated,
            wrong=found.wrong,
            outage=up_at - down_at,
            results_kept_in_memory=sum(log.count("(kept in memory)") for log in logs),
            recovery=first_after - up_at,
        )
        assert (found.lost, found.duplicated, found.wrong, found.failed) == (0, 0, 0, {})
        assert waited["values"] == [i * i for i in range(ITEMS)]
        assert (found.meta.ok, found.meta.batches_done) == (ITEMS, found.meta.batches)
        assert job.status == "finished"
        for node, log in zip(nodes, logs, strict=True):  # the nodes rode it out
            assert node.proc.poll() is None, log
            assert "retrying in" in log, log
    finally:
        for node in starter.started:
            node.close()
        r.close()
