"""Prometheus metrics of a node (``taskfan worker --metrics-port``), scraped for real."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from producer import Client
from taskfan.settings import Settings
from tests import tasks
from tests.cli_support import clean_env, invoke
from tests.conftest import StartWorker
from tests.helpers import free_port, scrape, wait_until
from worker.services.metrics import NodeCollector
from worker.services.stats import DURATION_BUCKETS, NodeStats, NodeView

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

pytestmark = pytest.mark.usefixtures("clean_env")
__all__ = ["clean_env"]


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_stats_rate_and_weighted_durations() -> None:
    now = [0.0]
    stats = NodeStats(clock=lambda: now[0])
    stats.batch("q", "m:f", ok=90, failed=10)
    now[0] = 10.0
    assert stats.rate() == 10.0  # 100 items in 10 s
    now[0] = 70.0
    stats.batch("q", "m:f", ok=60, failed=0, dead=False)
    assert stats.rate() == 1.0  # from the newest sample a minute old or more: 60 items, 60 s
    now[0] = 80.0
    assert stats.rate() == 60 / 70  # still from t = 10 s: the next sample is not a minute old
    stats.chunk("m:f", 4, 0.004)  # 4 items of 1 ms
    stats.chunk("m:f", 1, 2.0)
    stats.chunk("m:f", 0, 1.0)  # no items: nothing to observe
    durations = stats.durations["m:f"]
    cumulative = dict(durations.cumulative())
    assert (durations.count, durations.sum) == (5, 2.004)
    assert cumulative["0.0005"] == 0 and cumulative["0.001"] == 4 and cumulative["1.0"] == 4
    assert cumulative["5.0"] == 5 and cumulative["+Inf"] == 5
    assert len(cumulative) == len(DURATION_BUCKETS) + 1


def test_the_collector_exposes_counters_gauges_and_the_histogram() -> None:
    stats = NodeStats()
    stats.batch("q", "m:f", ok=8, failed=2)
    stats.batch("q", "m:f", ok=0, failed=3, dead=True)
    stats.batch("r", "m:g", ok=5, failed=0)
    stats.reclaimed("q")
    stats.reclaimed("q")
    stats.skip("q")
    stats.gave_back("q")
    stats.gave_back("q")
    stats.gave_back("q")
    stats.chunk("m:f", 10, 0.02)
    stats.retried("q", "m:f", 6)
    view = NodeView("n1", Settings(processes=3), 123.0, stats, batches=lambda: [],
                    pool_chunks=lambda: 2, pool_restarts=lambda: 4, retrying=lambda: 5)  # fmt: skip
    view.queues = {"q": (7, 1, 1)}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(view))
    found = samples(generate_latest(registry).decode())
    assert value(found, "taskfan_items_processed_total", queue="q", function="m:f") == 13
    assert value(found, "taskfan_items_failed_total", queue="q", function="m:f") == 5
    assert value(found, "taskfan_batches_processed_total", queue="q", function="m:f") == 2
    assert value(found, "taskfan_batches_failed_total", queue="q", function="m:f") == 2
    assert value(found, "taskfan_batches_dead_lettered_total", queue="q", function="m:f") == 1
    assert value(found, "taskfan_items_processed_total", queue="r", function="m:g") == 5
    assert value(found, "taskfan_reclaimed_batches_total", queue="q") == 2
    assert value(found, "taskfan_skipped_batches_total", queue="q") == 1
    assert value(found, "taskfan_given_back_batches_total", queue="q") == 3
    assert value(found, "taskfan_pool_restarts_total") == 4
    assert value(found, "taskfan_pool_chunks") == 2
    assert value(found, "taskfan_items_retried_total", queue="q", function="m:f") == 6
    assert value(found, "taskfan_items_retrying") == 5
    record = view.record()
    assert (record["retrying"], record["items_retried"]) == (5, 6)
    assert value(found, "taskfan_batches_in_flight") == 0
    assert value(found, "taskfan_node_processes") == 3
    assert value(found, "taskfan_item_duration_seconds_count", function="m:f") == 10
    assert value(found, "taskfan_item_duration_seconds_bucket", function="m:f", le="0.001") == 0
    assert value(found, "taskfan_item_duration_seconds_bucket", function="m:f", le="0.005") == 10
    assert value(found, "taskfan_queue_waiting_batches", queue="q") == 7
    assert value(found, "taskfan_queue_dead_letters", queue="q") == 1


def test_a_node_serves_metrics_that_count_what_it_did(
    client: Client, start_worker: StartWorker
) -> None:
    port = free_port()
    worker = start_worker("--metrics-port", str(port), "--metrics-host", "127.0.0.1",
                          env={"TASKFAN_HEARTBEAT_INTERVAL": "0.2"})  # fmt: skip

    def gauges() -> tuple[float, float] | None:
        try:
            found = samples(scrape(port))
        except OSError:  # the node is still starting
            return None
        key = (("queue", "default"),)
        if ("taskfan_queue_waiting_batches", key) not in found:
            return None
        return found[("taskfan_queue_waiting_batches", key)], found[
            ("taskfan_queue_in_flight_batches", key)
        ]

    # The queue gauges follow the queue (sampled every heartbeat): batches waiting ...
    slow = client.map(tasks.sleep, [0.4] * 12, batch_size=1)
    wait_until(lambda: (g := gauges()) and g[0] > 0 and g[1] > 0, timeout=30,
               message=lambda: f"batches waiting and in flight:\n{worker.log()}")  # fmt: skip
    assert slow.wait(timeout=60)
    # 60 items in 6 batches: 8 multiples of 7 raise, items 13 and 31 kill their process.
    job = client.map(tasks.crash_on_or_fail_7, range(1, 61), batch_size=10)
    assert job.wait(timeout=120)
    assert job.progress() == (60, 10, 60)
    # ... and none once all is done.
    wait_until(lambda: gauges() == (0, 0), timeout=30, message="an empty queue")
    found = samples(scrape(port))
    fn = "tests.tasks:crash_on_or_fail_7"
    assert value(found, "taskfan_items_processed_total", queue="default", function=fn) == 60
    assert value(found, "taskfan_items_failed_total", queue="default", function=fn) == 10
    assert value(found, "taskfan_batches_processed_total", queue="default", function=fn) == 6
    assert value(found, "taskfan_batches_failed_total", queue="default", function=fn) == 6
    assert value(found, "taskfan_items_processed_total", queue="default",
                 function="tests.tasks:sleep") == 12  # fmt: skip
    assert value(found, "taskfan_pool_restarts_total") >= 2  # a bisection per poison item
    assert value(found, "taskfan_batches_in_flight") == 0
    # Every item but the two that killed their process ran in a chunk that came back.
    assert value(found, "taskfan_item_duration_seconds_count", function=fn) == 58
    assert value(found, "taskfan_item_duration_seconds_bucket", function=fn, le="+Inf") == 58
    sleeps = "tests.tasks:sleep"
    assert value(found, "taskfan_item_duration_seconds_bucket", function=sleeps, le="0.1") == 0
    assert value(found, "taskfan_item_duration_seconds_bucket", function=sleeps, le="0.5") == 12
    info: Any = [k for k in found if k[0] == "taskfan_node_info"]
    assert len(info) == 1 and ("version", "0.1.0") in info[0][1]
    assert worker.stop() == 0
    with pytest.raises(OSError):
        scrape(port)  # the server stopped with the node


def test_a_taken_metrics_port_stops_the_node_with_a_clear_error(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("worker", "--redis-url", redis_url, "--metrics-port", str(port),
                        "--metrics-host", "127.0.0.1", "--burst")  # fmt: skip
    assert result.exit_code == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    bad = invoke("worker", "--redis-url", redis_url, "--metrics-port", "70000")
    assert bad.exit_code == 2 and "metrics_port must be a port number" in bad.stderr
