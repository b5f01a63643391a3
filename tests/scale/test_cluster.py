"""Redis Cluster: what only a cluster can show.

The core end-to-end and reliability tests run on the cluster too (they are
marked ``cluster``); here: keys that really are spread over primaries, priority
order across queues that live on different nodes, a stopping node that cuts its
blocking read short on the right node, records before acknowledgements, and a
queue whose slot moves to another primary mid-job.
"""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from redis.crc import key_slot

from producer import Client
from producer.enqueue import Enqueuer
from producer.job import Job
from producer.records import JobSpec
from taskfan import scripts
from taskfan.cli import main
from taskfan.codec import get_codec
from taskfan.connection import connect
from taskfan.keys import GROUP, JobKeys, QueueKeys
from taskfan.options import CallMode
from tests import tasks
from tests.chaos.census import census
from tests.cli_support import clean_env
from tests.conftest import StartWorker
from tests.helpers import wait_until
from tests.scale.cluster import LocalCluster
from worker.core.batches import Completed, Delivery
from worker.sources.streams.redis_io import NodeRedis

__all__ = ["clean_env"]  # a fixture

FAST_LEASES = {"TASKFAN_VISIBILITY_TIMEOUT": "2", "TASKFAN_HEARTBEAT_INTERVAL": "0.5"}


def names_on(cluster: LocalCluster, kind: str, node: int, avoid: int | None = None) -> str:
    """A queue name or job id (``kind``) whose slot is on ``node``."""
    for n in itertools.count():
        name = f"{kind}{n}"
        key = QueueKeys(name).stream if kind.startswith("q") else JobKeys(name).meta
        if cluster.owner(key) == node:
            return name
    raise AssertionError("unreachable")


def enqueue(
    client: Client,
    items: list[Any],
    job_id: str,
    queue: str,
    batch_size: int,
    fn: str = "tests.tasks:square",
) -> Job:
    """``client.map(fn, ...)`` with a job id of our choosing."""
    spec = JobSpec(queue, fn, get_codec("pickle"), CallMode.ONE, batch_size, 0, 600)
    return Job(client, Enqueuer(client.redis, spec, job_id).run(items))


def test_a_job_and_its_queue_on_different_primaries(
    redis_cluster: LocalCluster, cluster_r: redis.Redis, start_worker_on_cluster: StartWorker
) -> None:
    queue = names_on(redis_cluster, "q", 0)
    job_id = names_on(redis_cluster, "j", 1)
    client = Client.from_url(redis_cluster.url, queue)
    start_worker_on_cluster(queue=queue)
    job = enqueue(client, list(range(200)), job_id, queue, batch_size=10)
    assert list(job.results(timeout=60)) == [x * x for x in range(200)]
    with redis_cluster.nodes() as nodes:
        assert nodes[0].exists(QueueKeys(queue).stream, QueueKeys(queue).jobs) == 2
        assert nodes[1].exists(*JobKeys(job_id).all()) == 3
        assert nodes[1].hlen(JobKeys(job_id).results) == 20
        wait_until(lambda: nodes[0].xlen(QueueKeys(queue).stream) == 0, timeout=10,
                   message="every entry acknowledged and deleted")  # fmt: skip


def test_queues_on_different_primaries_are_read_in_priority_order(
    redis_cluster: LocalCluster,
    cluster_r: redis.Redis,
    start_worker_on_cluster: StartWorker,
    tmp_path: Path,
) -> None:
    high, low = names_on(redis_cluster, "qh", 1), names_on(redis_cluster, "ql", 2)
    ran = tmp_path / "ran"
    later = enqueue(Client.from_url(redis_cluster.url, low), [(str(ran), "low")] * 40,
                    names_on(redis_cluster, "j", 0), low, 4, "tests.tasks:append_tag")  # fmt: skip
    first = enqueue(Client.from_url(redis_cluster.url, high), [(str(ran), "high")] * 40,
                    names_on(redis_cluster, "j", 2), high, 4, "tests.tasks:append_tag")  # fmt: skip
    worker = start_worker_on_cluster("--queue", low, queue=high, processes=1)
    assert first.wait(timeout=60) and later.wait(timeout=60), worker.log()
    # The order the node's one process ran the items in (not when their batches
    # were recorded: the node's writer may record a high and a low batch in one
    # pipeline, and the two primaries then apply them in either order).
    order = ran.read_text().split()
    assert order == ["high"] * 40 + ["low"] * 40, (
        "a low-priority item ran before the high queue emptied: " + " ".join(order)
    )
    # Idle, the node blocks on one queue at a time, in short slices: a batch on
    # the other queue still starts at once.
    wait_until(lambda: "xreadgroup" in blocked_commands(redis_cluster), timeout=10,
               message="the node waiting for batches")  # fmt: skip
    started = time.monotonic()
    quick = Client.from_url(redis_cluster.url, low).map(tasks.square, [3])
    assert list(quick.results(timeout=30)) == [9]
    assert time.monotonic() - started < 5.0


def blocked_commands(cluster: LocalCluster, only: int | None = None) -> list[str]:
    """The commands that clients are blocked in, on every node (or node ``only``)."""
    with cluster.nodes() as nodes:
        clients = [
            c for i, n in enumerate(nodes) if only in (None, i) for c in n.client_list("normal")
        ]
    return [c["cmd"] for c in clients if "b" in c["flags"]]


def test_a_stopping_node_cuts_its_blocking_read_short(
    redis_cluster: LocalCluster, cluster_r: redis.Redis, start_worker_on_cluster: StartWorker
) -> None:
    # Reads block for 60 s: the node stops in time only if CLIENT UNBLOCK reaches
    # the node of the queue's slot, which holds the blocked read.
    queue = names_on(redis_cluster, "q", 2)
    worker = start_worker_on_cluster(queue=queue, env={"TASKFAN_BLOCK_SECONDS": "60"})
    wait_until(lambda: "xreadgroup" in blocked_commands(redis_cluster), timeout=30,
               message=lambda: "the node blocked on its queue:\n" + worker.log())  # fmt: skip
    assert blocked_commands(redis_cluster, only=2) == ["xreadgroup"]
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.log()
    assert time.monotonic() - started < 10.0, worker.log()


def one_delivery(r: Any, job: JobKeys) -> tuple[NodeRedis, Delivery]:
    node = NodeRedis(r, ["default"], "n1")
    node.prepare()
    r.xadd(QueueKeys("default").stream, {"j": job.id})
    (delivery,) = node.read(count=1, block_ms=1000)
    return node, delivery


def pending(r: Any) -> int:
    summary: Any = r.xpending(QueueKeys("default").stream, GROUP)
    return int(summary["pending"])


def test_on_a_cluster_a_batch_whose_results_cannot_be_recorded_stays_unacknowledged(
    cluster_r: redis.Redis,
) -> None:
    job = JobKeys("broken")
    cluster_r.set(job.meta, "not a hash")  # record.lua fails on it (WRONGTYPE)
    node, delivery = one_delivery(cluster_r, job)
    completed = Completed(delivery, job.id, "0", b"entry", 1, 0)
    node.write([completed], time.time())
    assert (completed.code, completed.acked, pending(cluster_r)) == (None, False, 1)
    cluster_r.delete(job.meta)  # the job is gone now: nothing to record, the batch is done
    node.write([completed], time.time())
    assert (completed.code, completed.acked, pending(cluster_r)) == (-1, True, 0)


def test_a_record_refused_for_lack_of_memory_is_written_again(r: redis.Redis) -> None:
    job = JobKeys("big")
    r.hset(job.meta, mapping={"state": "active", "sealed": 1, "batches": 1, "result_ttl": 0})
    node, delivery = one_delivery(r, job)
    completed = Completed(delivery, job.id, "0", b"entry", 1, 0)
    limit: Any = r.config_get("maxmemory")
    r.config_set("maxmemory", 1)  # noeviction: every write that needs memory is refused
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            node.write([completed], time.time())
        assert completed.code is None
    finally:
        r.config_set("maxmemory", limit["maxmemory"])
    node.write([completed], time.time())  # as the writer does, after its backoff
    # the job's only batch: recorded, and the record that finished the job
    assert (completed.code, completed.acked, pending(r)) == (scripts.RECORDED_LAST, True, 0)
    assert r.hget(job.results, "0") == b"entry" and r.hget(job.meta, "state") == b"finished"


def test_a_queue_slot_moving_to_another_primary_mid_job_loses_nothing(
    redis_cluster: LocalCluster, cluster_r: redis.Redis, start_worker_on_cluster: StartWorker
) -> None:
    queue = names_on(redis_cluster, "q", 0)
    client = Client.from_url(redis_cluster.url, queue)
    nodes = [start_worker_on_cluster(queue=queue, processes=1, env=FAST_LEASES) for _ in range(2)]
    job = client.map(tasks.nap_square, range(3000), batch_size=50)
    wait_until(lambda: job.progress().done >= 300, timeout=60, message="the job under way")
    redis_cluster.move_slot(QueueKeys(queue).stream, to=1)
    assert redis_cluster.owner(QueueKeys(queue).stream) == 1
    done_at_move = job.progress().done
    # And the scripts vanish from every primary (as after a failover to a
    # replica that never loaded them): writes meet NOSCRIPT and load them again.
    with redis_cluster.nodes() as clients:
        for node in clients:
            node.script_flush()
    assert job.wait(timeout=120), "\n".join(n.log() for n in nodes)
    assert done_at_move < 3000, "the job ended before the slot moved"
    found = census(cluster_r, job.id, expected=lambda i: i * i)
    assert (found.lost, found.duplicated, found.wrong, found.failed) == (0, 0, 0, {})
    with redis_cluster.node(1) as owner:
        assert owner.exists(QueueKeys(queue).stream) == 1
    with redis_cluster.node(0) as former:
        slot = key_slot(QueueKeys(queue).stream.encode())
        assert former.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 0


def test_urls_name_the_cluster(redis_cluster: LocalCluster) -> None:
    client: Any = connect(redis_cluster.url)
    assert len(client.get_primaries()) == 3
    assert client.ping()
    client.close()


@pytest.mark.usefixtures("clean_env")
def test_rq_queues_are_refused_on_a_cluster(redis_cluster: LocalCluster) -> None:
    result = CliRunner().invoke(
        main, ["worker", "--redis-url", redis_cluster.url, "--rq-queue", "default"]
    )
    assert result.exit_code != 0
    assert "RQ does not run on a Redis Cluster" in result.output
