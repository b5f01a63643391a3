"""The backlog in items (``worker.services.backlog``): waiting and in flight per queue, as
gauges on a node's metrics server, and its health probes."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from typing import Any

import pytest
import redis

from producer import Client
from taskfan import keys
from taskfan.keys import QueueKeys
from taskfan.settings import Settings
from tests import tasks
from tests.cli_support import clean_env
from tests.conftest import StartWorker
from tests.helpers import free_port, scrape, wait_until
from tests.test_ops_metrics import samples
from worker.services import backlog
from worker.services.metrics import MetricsServer
from worker.services.stats import NodeStats, NodeView

pytestmark = pytest.mark.usefixtures("clean_env")
__all__ = ["clean_env"]

FAST = {"TASKFAN_HEARTBEAT_INTERVAL": "0.2", "TASKFAN_VISIBILITY_TIMEOUT": "2"}


def items(r: redis.Redis, queue: str = "default") -> tuple[int, int]:
    return backlog.sample(r, [QueueKeys(queue)])[queue]


def held_by_nodes(r: redis.Redis, queue: str = "default") -> int:
    """What the live node records say they hold of ``queue``."""
    total = 0
    listed: Any = r.zrange(keys.NODES, 0, -1)
    for node_id in listed:
        raw: Any = r.hget(keys.node(node_id.decode()), backlog.HELD_FIELD)
        total += json.loads(raw).get(queue, 0) if raw else 0
    return total


def gauges(port: int) -> tuple[float, float] | None:
    try:
        found = samples(scrape(port))
    except OSError:  # the node is still starting
        return None
    key = (("queue", "default"),)
    if ("taskfan_queue_items_waiting", key) not in found:
        return None
    return found[("taskfan_queue_items_waiting", key)], found[
        ("taskfan_queue_items_in_flight", key)
    ]


def test_items_enqueued_wait_until_a_node_takes_them(
    r: redis.Redis, client: Client, redis_url: str
) -> None:
    assert items(r) == (0, 0)
    job = client.map(tasks.add, [(i, i) for i in range(1000)], batch_size=300)
    assert items(r) == (1000, 0)  # four batches, counted in items
    other = Client.from_url(redis_url, queue="other").map(tasks.add, [(1, 1)] * 7)
    assert items(r, "other") == (7, 0)
    job.cancel()
    assert items(r) == (0, 0)  # a cancelled job waits for nothing
    assert other.id


def test_the_gauges_follow_a_running_job_and_end_at_zero(
    r: redis.Redis, client: Client, start_worker: StartWorker
) -> None:
    port = free_port()
    worker = start_worker("--metrics-port", str(port), "--metrics-host", "127.0.0.1",
                          processes=1, env=FAST)  # fmt: skip
    job = client.map(tasks.sleep, [0.5] * 8, batch_size=2)

    def consistent() -> bool:
        g = gauges(port)
        if g is None:
            return False
        held = held_by_nodes(r)
        done = job.progress().done
        return held > 0 and g == (8 - done - held, held)

    wait_until(consistent, timeout=30, message=lambda: f"{gauges(port)}\n{worker.log()}")
    assert job.wait(timeout=60)
    wait_until(lambda: gauges(port) == (0, 0), timeout=30, message=lambda: str(gauges(port)))
    assert items(r) == (0, 0)


def test_the_counts_come_back_after_a_node_is_killed(
    r: redis.Redis, client: Client, start_worker: StartWorker
) -> None:
    victim = start_worker(processes=1, env={**FAST, "TASKFAN_VISIBILITY_TIMEOUT": "1"})
    job = client.map(tasks.sleep, [0.5] * 10, batch_size=2)
    wait_until(lambda: held_by_nodes(r) > 0, timeout=30, message=victim.log)
    victim.signal(signal.SIGKILL)
    assert victim.wait(timeout=30) != 0
    # Its record expires within three heartbeats: what it held waits again.
    wait_until(lambda: held_by_nodes(r) == 0, timeout=10, message="the record expires")
    assert items(r) == (10 - job.progress().done, 0)
    port = free_port()
    start_worker("--metrics-port", str(port), "--metrics-host", "127.0.0.1",
                 processes=2, env={**FAST, "TASKFAN_VISIBILITY_TIMEOUT": "1"})  # fmt: skip
    assert job.wait(timeout=60)
    assert job.progress()[:2] == (10, 0)  # nothing lost, nothing failed
    wait_until(lambda: gauges(port) == (0, 0), timeout=30, message=lambda: str(gauges(port)))
    assert items(r) == (0, 0)


@pytest.mark.parametrize(
    ("args", "env"),
    [
        ((), {"TASKFAN_SECRET": "s" * 32}),  # unsigned batches: dead-lettered, items failed
        (("--allow", "examples"), {}),  # a function it may not run: handed back, then
    ],  # failed, since no live node can run it
    ids=["dead-lettered", "handed-back"],
)
def test_batches_a_node_refuses_leave_the_backlog(
    r: redis.Redis,
    client: Client,
    start_worker: StartWorker,
    args: tuple[str, ...],
    env: dict[str, str],
) -> None:
    port = free_port()
    worker = start_worker(*args, "--metrics-port", str(port), "--metrics-host", "127.0.0.1",
                 env={**FAST, **env})  # fmt: skip
    wait_until(lambda: gauges(port) is not None, timeout=30, message=worker.log)
    job = client.map(tasks.sleep, [0.01] * 30, batch_size=10)
    wait_until(lambda: job.progress().done == 30, timeout=60, message=lambda: str(job.progress()))
    assert job.progress().failed == 30
    wait_until(lambda: gauges(port) == (0, 0), timeout=30, message=lambda: str(gauges(port)))
    assert items(r) == (0, 0)


def test_only_the_newest_jobs_are_read(
    r: redis.Redis, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forged index of millions of jobs costs no more than the producers' cap."""
    old = client.map(tasks.add, [(1, 1)] * 5)
    new = client.map(tasks.add, [(1, 1)] * 3)
    assert items(r) == (8, 0)
    monkeypatch.setattr(backlog, "MAX_JOBS", 1)
    assert items(r) == (3, 0) and old.id != new.id


def test_unreadable_records_count_as_nothing(r: redis.Redis) -> None:
    r.zadd(keys.NODES, {"n-bad": 1, "n-worse": 1})
    r.hset(keys.node("n-bad"), mapping={backlog.HELD_FIELD: "not json", "heartbeat_at": 1})
    r.hset(keys.node("n-worse"), mapping={backlog.HELD_FIELD: '{"default": -5, "x": "y"}',
                                          "heartbeat_at": 1})  # fmt: skip
    r.zadd(QueueKeys("default").jobs, {"j{bad": 1, "j-gone": 1})
    try:
        assert items(r) == (0, 0)
    finally:
        r.delete(keys.node("n-bad"), keys.node("n-worse"), QueueKeys("default").jobs)
        r.zrem(keys.NODES, "n-bad", "n-worse")


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_probes_say_live_and_ready_from_the_heartbeat() -> None:
    now = [100.0]
    view = NodeView("n1", Settings(heartbeat_interval=1.0), 0.0, NodeStats(),
                    batches=list, pool_chunks=lambda: 0, pool_restarts=lambda: 0)  # fmt: skip
    server = MetricsServer(view, "127.0.0.1", 0, clock=lambda: now[0])
    try:
        assert get(server.port, "/healthz") == (200, "ok\n")
        status, text = get(server.port, "/readyz")
        assert status == 503 and "no heartbeat" in text
        view.beat_at = 99.0
        assert get(server.port, "/readyz") == (200, "ok\n")
        now[0] = 104.0  # three intervals and more since the last beat reached Redis
        status, text = get(server.port, "/readyz")
        assert status == 503 and "5s ago" in text
        assert get(server.port, "/healthz")[0] == 200  # a Redis outage is no reason to restart
        assert "taskfan_node_processes" in get(server.port, "/metrics")[1]
    finally:
        server.close()


def test_a_node_answers_its_probes(start_worker: StartWorker) -> None:
    port = free_port()
    worker = start_worker("--metrics-port", str(port), "--metrics-host", "127.0.0.1", env=FAST)

    def answer(path: str) -> int | None:
        try:
            return get(port, path)[0]
        except OSError:
            return None

    wait_until(lambda: answer("/readyz") == 200, timeout=30, message=worker.log)
    assert answer("/healthz") == 200
    assert worker.stop() == 0


@pytest.mark.parametrize("raw", [None, b"[]", b"{", b'{"q": 1.5}', b"\xff"])
def test_held_items_parse_defensively(raw: bytes | None) -> None:
    assert backlog._held(raw) == {}


def test_the_groups_lag_counts_the_batches_no_node_has_read(
    r: redis.Redis, client: Client, start_worker: StartWorker
) -> None:
    """What KEDA's redis-streams trigger (lagCount) reads to wake nodes from zero:
    XINFO GROUPS' lag stays a number after nodes acknowledge and delete entries."""
    queue = QueueKeys("default")
    node = start_worker(env=FAST)
    assert client.map(tasks.add, [(1, 1)] * 6, batch_size=2).wait(timeout=60), node.log()
    assert node.stop() == 0  # scaled to zero
    client.map(tasks.add, [(1, 1)] * 40, batch_size=10)
    groups: Any = r.xinfo_groups(queue.stream)
    (group,) = [g for g in groups if g["name"] == keys.GROUP.encode()]
    assert group["lag"] == 4  # batches, not the 40 items: the items gauge says those
    assert items(r) == (40, 0)
