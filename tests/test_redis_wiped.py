"""A running node after Redis restarts without persistence (issue 14, item 1).

The server comes back empty: no queue streams, no consumer group, no scripts,
no node record. Nodes must serve new jobs within seconds, without a restart,
and stop complaining once they have healed.
"""

from __future__ import annotations

import functools
import subprocess
import time
from typing import Any

import pytest
import redis

from producer import Client
from taskfan import keys
from taskfan.errors import JobNotFound
from taskfan.keys import GROUP, QueueKeys
from taskfan.server import RedisServer
from tests import tasks
from tests.cli_support import REPO, clean_environ, taskfan
from tests.conftest import VolatileRedis
from tests.helpers import wait_until
from tests.test_vanished_job import Waiter
from tests.workers import WorkerProcess

ENV = {"TASKFAN_VISIBILITY_TIMEOUT": "2", "TASKFAN_HEARTBEAT_INTERVAL": "0.5"}
#: seconds from Redis answering again to a new job's results, at most
RECOVERY = 8.0


def _node_ids(r: redis.Redis) -> list[bytes]:
    found: Any = r.zrange(keys.NODES, 0, -1)
    return list(found)


def _pending(r: redis.Redis) -> int:
    reply: Any = r.xpending(QueueKeys("default").stream, GROUP)
    return int(reply["pending"])


def _beats(r: redis.Redis, node_id: bytes) -> float:
    """The node's last heartbeat, as its record says (0 while it has none)."""
    value: Any = r.hget(keys.node(node_id.decode()), "heartbeat_at")
    return float(value or 0)


@pytest.mark.parametrize("outage", [1.0, 10.0])
def test_a_node_serves_new_jobs_after_redis_restarts_empty(
    volatile_redis: VolatileRedis, outage: float
) -> None:
    url = volatile_redis.url
    node = WorkerProcess(url, processes=1, env=ENV)
    r = redis.Redis.from_url(url)
    try:
        client = Client.from_url(url)
        assert list(client.map(tasks.square, range(4)).results(timeout=60)) == [0, 1, 4, 9]
        # A batch in flight across the outage too: its lease refresh meets no group.
        lost = client.map(tasks.sleep, [outage + 1.0])
        wait_until(lambda: _pending(r), timeout=30, message="the node holds the long batch")
        waiter = Waiter(functools.partial(lost.wait, outage + 60))  # outlives the outage
        waiter.start()
        volatile_redis.outage(outage)
        back = time.monotonic()
        values = list(client.map(tasks.square, range(5, 9)).results(timeout=RECOVERY + 7))
        served = time.monotonic() - back
        assert values == [25, 36, 49, 64]
        assert served < RECOVERY, node.log()
        # The job that ran across the outage is gone with Redis: its waiter says so.
        waiter.join(RECOVERY)
        assert isinstance(waiter.error, JobNotFound), waiter.error
        assert waiter.ended_at - back < RECOVERY
        # The node record is back, and the node has healed: three more beats, no errors.
        (node_id,) = wait_until(lambda: _node_ids(r), timeout=10, message="the node record")
        healed_at = len(node.log())
        first = wait_until(lambda: _beats(r, node_id), timeout=10, message="a heartbeat")
        wait_until(lambda: _beats(r, node_id) > first + 1.0, timeout=10,
                   message="three more heartbeats")  # fmt: skip
        after = node.log()[healed_at:]
        assert "Traceback" not in node.log(), node.log()
        assert "failed" not in after, after
        assert node.proc.poll() is None
    finally:
        node.close()
        r.close()


def test_an_rq_node_serves_new_jobs_after_redis_restarts_empty(
    volatile_redis: VolatileRedis,
) -> None:
    """The RQ source after the same outage: its worker registration is gone with
    the data, and RQ's scripts with the server."""
    from rq import Queue, Worker  # the RQ adapter's optional dependency
    from rq.job import JobStatus

    from tests import rq_tasks

    url = volatile_redis.url
    node = WorkerProcess(url, "--rq-queue", "q", queue=None, processes=1, env=ENV)
    r = redis.Redis.from_url(url)
    try:
        first = Queue("q", connection=r).enqueue(rq_tasks.double, 1)
        wait_until(lambda: first.get_status(refresh=True) == JobStatus.FINISHED, timeout=30,
                   message=node.log)  # fmt: skip
        volatile_redis.outage(1.0)
        back = time.monotonic()
        job = Queue("q", connection=r).enqueue(rq_tasks.double, 5)
        wait_until(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, timeout=RECOVERY,
                   message=node.log)  # fmt: skip
        assert time.monotonic() - back < RECOVERY
        assert job.return_value() == 10
        # Its RQ worker registration comes back with its heartbeat.
        wait_until(lambda: Worker.all(connection=r), timeout=10, message=node.log)
        assert "Traceback" not in node.log(), node.log()
        assert node.proc.poll() is None
    finally:
        node.close()
        r.close()


@pytest.mark.parametrize("read", ["wait", "results", "as_completed"])
def test_a_wait_that_starts_during_an_outage_rides_it_out(read: str) -> None:
    """A server that keeps its data (AOF) is down when the wait starts: the wait
    keeps trying until Redis is back (its deadline allowing), as one that started
    before the outage does."""
    with RedisServer(appendonly=True, extra_args=("--appendfsync", "always")) as server:
        node = WorkerProcess(server.url, processes=1, env=ENV)
        try:
            job = Client.from_url(server.url).map(tasks.square, range(6), batch_size=2)
            assert job.wait(timeout=60)
            server.kill()
            waits = {
                "wait": lambda: job.wait(timeout=60),
                "results": lambda: list(job.results(timeout=60)),
                "as_completed": lambda: sorted(o.value for o in job.as_completed(timeout=60)),
            }
            waiter = Waiter(waits[read])
            waiter.start()
            waiter.join(1.0)  # the outage goes on for a second: the wait keeps trying
            assert waiter.is_alive(), waiter.error
            server.restart()
            waiter.join(30)
            assert not waiter.is_alive() and waiter.error is None, waiter.error
        finally:
            node.close()


def test_taskfan_wait_rides_out_an_outage() -> None:
    """``taskfan wait`` through a Redis outage (data kept): it neither dies with
    "Redis is unreachable" nor misses the end."""
    with RedisServer(appendonly=True, extra_args=("--appendfsync", "always")) as server:
        r = redis.Redis.from_url(server.url)
        job = Client.from_url(server.url).map(tasks.square, range(4))  # no node yet
        proc = subprocess.Popen(
            taskfan("wait", job.id, "--timeout", "60", "--redis-url", server.url),
            cwd=REPO, env=clean_environ(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        node = None
        try:
            wait_until(lambda: r.info("clients")["blocked_clients"], timeout=30,
                       message="taskfan wait blocked")  # fmt: skip
            server.kill()
            with pytest.raises(subprocess.TimeoutExpired):  # the outage: it keeps waiting
                proc.wait(timeout=2.0)
            server.restart()
            node = WorkerProcess(server.url, processes=1, env=ENV)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert f"job {job.id}: 4/4 items done, 0 failed" in err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            if node is not None:
                node.close()
            r.close()
