"""Chaos: a node cut off from Redis mid-job (network namespace, link set down)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import redis

from producer import Client
from taskfan import keys
from taskfan.keys import JobKeys
from taskfan.server import RedisServer
from tests import tasks
from tests.chaos.census import census, held_batches, recorded_at, recovery, redis_now
from tests.chaos.conftest import Report
from tests.chaos.netns import linked_namespace
from tests.helpers import wait_until
from tests.workers import WorkerProcess

pytestmark = pytest.mark.chaos

ITEMS = 4_000
BATCH = 50
ENV = {"TASKFAN_VISIBILITY_TIMEOUT": "2", "TASKFAN_HEARTBEAT_INTERVAL": "0.5"}


def record_calls(r: redis.Redis) -> int:
    """record.lua runs so far (nodes call their scripts by EVALSHA)."""
    stats: Any = r.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def job_state(r: redis.Redis, job_id: str) -> tuple[Any, ...]:
    """Everything a write could change: meta, results, events, expiries."""
    job = JobKeys(job_id)
    return (r.hgetall(job.meta), r.hgetall(job.results), r.xrange(job.events),
            [r.ttl(key) > 0 for key in job.all()])  # fmt: skip


def test_a_cut_off_node_s_batches_are_reclaimed_and_its_late_writes_change_nothing(
    report: Report,
) -> None:
    # Bound beyond loopback too, so protected mode wants a password.
    password = os.urandom(8).hex()
    with (
        linked_namespace() as link,
        RedisServer(password=password, extra_args=("--bind", "127.0.0.1", link.host_ip)) as server,
    ):
        r = redis.Redis.from_url(server.url)
        nodes: list[WorkerProcess] = []
        try:
            cut_url = f"redis://:{password}@{link.host_ip}:{server.port}/0"
            cut = WorkerProcess(cut_url, "--name", "cut-off", processes=1, env=ENV,
                                wrap=link.exec)  # fmt: skip
            nodes.append(cut)
            steady = WorkerProcess(server.url, "--name", "steady", processes=1, env=ENV)
            nodes.append(steady)
            wait_until(lambda: r.exists(keys.node("cut-off"), keys.node("steady")) == 2,
                       timeout=60, message=lambda: "both nodes up:\n" + cut.log())  # fmt: skip
            job = Client.from_url(server.url).map(tasks.nap_square, range(ITEMS), batch_size=BATCH)

            def cut_off_node_busy() -> bool:
                assert cut.proc.poll() is None, cut.log()
                recorded = int(r.hget(keys.node("cut-off"), "batches_done") or 0)
                return recorded > 0 and bool(held_batches(r, "cut-off"))

            wait_until(cut_off_node_busy, timeout=60,
                       message=lambda: "the namespaced node at work:\n" + cut.log())  # fmt: skip
            link.down()
            cut_at = redis_now(r)
            held = held_batches(r, "cut-off")
            assert held, "the cut-off node held no batch when the link went down"
            # The steady node reclaims the cut-off node's batches and ends the job.
            assert job.wait(timeout=60), steady.log()
            assert "reclaimed" in steady.log()
            assert cut.proc.poll() is None, cut.log()
            finished = job_state(r, job.id)
            calls = record_calls(r)

            link.up()
            wait_until(lambda: record_calls(r) > calls, timeout=60,
                       message=lambda: "the cut-off node's late writes:\n" + cut.log())  # fmt: skip
            assert cut.stop(timeout=60) == 0, cut.log()  # it drained what it held, and left
            late_writes = record_calls(r) - calls
            assert job_state(r, job.id) == finished, "a late write changed the job"

            rerun_time, rerun = recovery(held, cut_at, recorded_at(r, job.id))
            found = census(r, job.id, expected=lambda i: i * i)
            report(
                "one node cut off (ip link set down) mid-job, then back",
                items=ITEMS,
                batches_held_at_cut=len(held),
                batches_rerun=rerun,
                late_writes=late_writes,
                lost=found.lost,
                duplicated=found.duplicated,
                wrong=found.wrong,
                recovery=rerun_time,
            )
            assert (found.lost, found.duplicated, found.wrong, found.failed) == (0, 0, 0, {})
            assert (found.meta.ok, found.meta.batches_done) == (ITEMS, found.meta.batches)
            assert found.results_fields == found.meta.batches
        finally:
            for node in nodes:
                node.close()
            r.close()
