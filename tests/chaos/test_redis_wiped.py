"""Chaos: Redis SIGKILLed mid-job and restarted **without persistence** (issue 14,
items 1, 4 and 9): it comes back empty, with no queue stream, consumer group,
scripts, node records or jobs.

The job that was running is gone with it: its waiter must say so (JobNotFound)
within seconds. The nodes, never restarted, must serve a new job within seconds
of Redis answering: every item once, every key of the ended job expiring.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from producer import Client
from taskfan import keys
from taskfan.errors import JobNotFound
from tests import tasks
from tests.chaos.census import census, recorded_at
from tests.chaos.conftest import Report
from tests.conftest import StartWorker, VolatileRedis
from tests.helpers import wait_until

pytestmark = pytest.mark.chaos

ITEMS = 6_000
BATCH = 100
ENV = {"TASKFAN_VISIBILITY_TIMEOUT": "2", "TASKFAN_HEARTBEAT_INTERVAL": "0.5"}


@pytest.mark.parametrize("outage", [10.0, 60.0])
def test_nodes_serve_a_new_job_after_redis_restarts_empty(
    volatile_redis: VolatileRedis, report: Report, outage: float
) -> None:
    url = volatile_redis.url
    r = redis.Redis.from_url(url)
    starter = StartWorker(url)
    try:
        nodes = [starter(processes=1, env=ENV) for _ in range(2)]
        client = Client.from_url(url)
        lost_job = client.map(tasks.nap_square, range(ITEMS), batch_size=BATCH)
        waited: dict[str, Any] = {}

        def wait_for_results() -> None:
            try:
                list(lost_job.results(timeout=outage + 120))
            except BaseException as exc:
                waited["error"], waited["at"] = exc, time.monotonic()

        waiter = threading.Thread(target=wait_for_results, daemon=True)
        waiter.start()
        wait_until(lambda: lost_job.progress().done >= ITEMS // 3, timeout=60,
                   message="a third of the job done")  # fmt: skip
        volatile_redis.outage(outage)
        back = time.time()  # our own server, on this machine: the same clock
        back_mono = time.monotonic()

        job = client.map(tasks.nap_square, range(ITEMS), batch_size=BATCH)
        assert job.wait(timeout=120)
        finished = time.monotonic() - back_mono
        waiter.join(timeout=30)
        assert not waiter.is_alive(), "the old job's waiter still waits"
        assert isinstance(waited.get("error"), JobNotFound), waited

        found = census(r, job.id, expected=lambda i: i * i)
        untimed = [key for key in job.keys.all() if r.ttl(key) <= 0]
        node_ids: Any = wait_until(lambda: r.zrange(keys.NODES, 0, -1), timeout=10,
                                   message="the node records")  # fmt: skip
        logs = [node.log() for node in nodes]
        report(
            f"Redis SIGKILLed mid-job, down {outage:.0f} s, restarted empty; 2 nodes",
            items=ITEMS,
            lost=found.lost,
            duplicated=found.duplicated,
            wrong=found.wrong,
            new_job_served_in=min(recorded_at(r, job.id).values()) - back,
            new_job_done_in=finished,
            old_job_waiter_told=waited["at"] - back_mono,
            groups_recreated=sum(log.count("creating it again") for log in logs),
            node_records=len(node_ids),
            keys_without_ttl=len(untimed),
        )
        assert (found.lost, found.duplicated, found.wrong, found.failed) == (0, 0, 0, {})
        assert job.status == "finished" and not untimed
        assert len(node_ids) == len(nodes)
        for node, log in zip(nodes, logs, strict=True):
            assert node.proc.poll() is None, log
            assert "Traceback" not in log, log
    finally:
        for node in starter.started:
            node.close()
        r.close()
