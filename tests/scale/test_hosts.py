"""Several hosts on a real network: Redis, two worker nodes and a producer, each in a
network namespace of its own (tests/scale/topology.py); one node's link is cut mid-job
and the other finishes the work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from taskfan import keys
from taskfan.server import find_redis_server
from tests.chaos.census import census, held_batches
from tests.helpers import wait_until
from tests.scale.topology import Host, star
from tests.workers import REPO, WorkerProcess

ITEMS = 8000
BATCH = 50
ENV = {"TASKFAN_VISIBILITY_TIMEOUT": "2", "TASKFAN_HEARTBEAT_INTERVAL": "0.5"}
PORT = 6379  #: each namespace has ports of its own


class HostedRedis:
    """redis-server on the hub host, bound to its addresses, with a password."""

    def __init__(self, hub: Host) -> None:
        self.hub = hub
        self.password = os.urandom(8).hex()
        self.dir = Path(tempfile.mkdtemp(prefix="taskfan-scale-redis-"))
        self.proc = subprocess.Popen(
            [*hub.exec, find_redis_server(), "--port", str(PORT), "--bind", "0.0.0.0",
             "--requirepass", self.password, "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def url(self, address: str) -> str:
        return f"redis://:{self.password}@{address}:{PORT}/0"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def network() -> Iterator[tuple[HostedRedis, list[Host]]]:
    with star(leaves=3) as hosts:
        server = HostedRedis(hosts.hub)
        try:
            yield server, hosts.leaves
        finally:
            server.close()


def test_two_nodes_on_their_own_hosts_share_a_job_and_one_finishes_when_the_other_is_cut_off(
    network: tuple[HostedRedis, list[Host]],
) -> None:
    server, (host_a, host_b, producer_host) = network
    r = redis.Redis.from_url(server.url(server.hub.hub_address), socket_timeout=10)

    def up() -> bool:
        try:
            return bool(r.ping())
        except redis.ConnectionError:
            assert server.proc.poll() is None, "redis-server on the hub exited"
            return False

    wait_until(up, timeout=30, interval=0.05, message="Redis on the hub host")
    nodes = [
        WorkerProcess(server.url(host.hub_address), "--name", name, processes=1, env=ENV,
                      wrap=host.exec)
        for host, name in ((host_a, "node-a"), (host_b, "node-b"))
    ]  # fmt: skip
    producer = subprocess.Popen(
        [*producer_host.exec, sys.executable, "-m", "tests.scale.producer_host",
         server.url(producer_host.hub_address), str(ITEMS), str(BATCH)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert producer.stdout is not None
        job_id = producer.stdout.readline().strip()
        assert job_id, producer.stderr.read() if producer.stderr else ""

        def both_busy() -> bool:
            done = [int(r.hget(keys.node(n), "batches_done") or 0) for n in ("node-a", "node-b")]
            return all(done) and bool(held_batches(r, "node-a"))

        logs = lambda: "\n".join(n.log() for n in nodes)  # noqa: E731
        wait_until(both_busy, timeout=60, message=lambda: "both nodes at work:\n" + logs())
        host_a.cut()
        cut_done = int(r.hget(keys.node("node-b"), "items_done") or 0)
        # The producer, on its own host, gets every result once node B has
        # reclaimed node A's batches.
        out, err = producer.communicate(timeout=180)
        assert producer.returncode == 0, err
        assert json.loads(out) == {"results": ITEMS, "right": ITEMS}
        assert "reclaimed" in nodes[1].log(), logs()
        assert int(r.hget(keys.node("node-b"), "items_done") or 0) > cut_done
        assert nodes[0].proc.poll() is None, "the cut-off node should wait, not die"
        found = census(r, job_id, expected=lambda i: i * i)
        assert (found.lost, found.duplicated, found.wrong, found.failed) == (0, 0, 0, {})
    finally:
        producer.kill()
        for node in nodes:
            node.close()
        r.close()
