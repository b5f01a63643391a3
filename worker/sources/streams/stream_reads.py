"""Blocking reads of the queue streams, on connections of their own.

A stopping node cuts a blocking read short with CLIENT UNBLOCK, which names a
connection by id: so reads run on a connection held for them alone, and the
unblock goes to the server that holds it.

- ``ServerReads`` (one server, or a Sentinel-managed master): one XREADGROUP
  over every queue stream, in priority order, as Redis serves them.
- ``ClusterReads`` (Redis Cluster): each queue is a slot of its own and one
  command cannot span slots, so each queue is read alone, on a connection to
  the node that owns its slot. With one queue that is the same blocking read.
  With several, the node reads them in priority order without blocking, and
  when all are empty blocks on one of them (in turn) for at most
  ``SLICE_MS``: a batch on another queue waits at most about that long per
  queue before a node that is idle sees it.

A redirection (the slot moved), a node that went down, or a master demoted
under a blocked read (``UNBLOCKED ... instance state changed``) ends the read
with ``redis.ConnectionError``: the reader backs off and reads again, through a
fresh connection to whichever node now serves the slot.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ResponseError

from taskfan.connection import RedisClient
from taskfan.keys import GROUP
from taskfan.transient import TRANSIENT

log = logging.getLogger(__name__)

#: the reply of XREADGROUP: [(stream, [(entry id, fields), ...]), ...]
Reply = list[Any]


def _demoted(exc: ResponseError) -> bool:
    """A blocked read ended because its server stopped being a master."""
    return "instance state changed" in str(exc)


class ServerReads:
    """Reads on one server, through a connection held for them.

    After a connection error the held connection goes back to the pool and a
    new one is taken: the pool's connect is what asks Sentinel where the master
    is now (redis-py reconnects a held connection to its old address).
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._conn: redis.Redis | None = None
        self._id: int | None = None

    def read(self, streams: Sequence[str], consumer: str, count: int, block_ms: int) -> Reply:
        try:
            if self._conn is None or self._id is None:
                self._release()
                pool = self.client.connection_pool
                self._conn = redis.Redis(connection_pool=pool, single_connection_client=True)
                self._id = int(self._conn.client_id())
            reply: Any = self._conn.xreadgroup(
                GROUP, consumer, dict.fromkeys(streams, ">"), count, block_ms
            )
            return reply or []
        except TRANSIENT:
            self._release()  # the next read takes a fresh connection (Sentinel: to the master)
            raise
        except ResponseError as exc:
            if not _demoted(exc):
                raise
            self._release()
            raise redis.ConnectionError(f"the Redis master was demoted: {exc}") from exc

    def _release(self) -> None:
        conn, self._conn, self._id = self._conn, None, None
        if conn is not None:
            if conn.connection is not None:
                conn.connection.disconnect()
            with contextlib.suppress(redis.RedisError):
                conn.close()

    def interrupt(self) -> None:
        reader_id = self._id
        if reader_id is not None:
            with contextlib.suppress(redis.RedisError):
                self.client.client_unblock(reader_id)


class ClusterReads:
    """Reads on a Redis Cluster: one queue at a time, on the node of its slot."""

    #: longest block on one queue while a node serves several (milliseconds)
    SLICE_MS = 250

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        #: node name -> (connection held for reads, its CLIENT ID)
        self._held: dict[str, tuple[redis.Redis, int]] = {}
        self._blocked: tuple[ClusterNode, int] | None = None
        self._turn = 0

    def read(self, streams: Sequence[str], consumer: str, count: int, block_ms: int) -> Reply:
        if len(streams) == 1:
            return self._read(streams[0], consumer, count, block_ms)
        found: Reply = []
        for stream in streams:  # priority order, without blocking
            want = count - sum(len(entries) for _, entries in found)
            if want <= 0:
                break
            found += self._read(stream, consumer, want, None)
        if found:
            return found
        stream = streams[self._turn % len(streams)]
        self._turn += 1
        return self._read(stream, consumer, count, min(block_ms, self.SLICE_MS))

    def _read(self, stream: str, consumer: str, count: int, block_ms: int | None) -> Reply:
        try:
            node = self.client.get_node_from_key(stream)
            conn, conn_id = self._connection(node)
            self._blocked = (node, conn_id) if block_ms is not None else None
            try:
                reply: Any = conn.xreadgroup(GROUP, consumer, {stream: ">"}, count, block_ms)
            finally:
                self._blocked = None
            return reply or []
        except TRANSIENT as exc:
            self._reset()
            if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
                raise
            raise redis.ConnectionError(f"queue stream {stream}: {exc}") from exc
        except ResponseError as exc:
            if not _demoted(exc):
                raise
            self._reset()
            raise redis.ConnectionError(f"the cluster node was demoted: {exc}") from exc

    def _connection(self, node: ClusterNode) -> tuple[redis.Redis, int]:
        held = self._held.get(node.name)
        if held is None:
            assert node.redis_connection is not None
            pool = node.redis_connection.connection_pool
            conn = redis.Redis(connection_pool=pool, single_connection_client=True)
            held = (conn, int(conn.client_id()))
            self._held[node.name] = held
        return held

    def _reset(self) -> None:
        """Drop the held connections and ask the cluster where the slots are now."""
        held, self._held = self._held, {}
        for conn, _ in held.values():
            if conn.connection is not None:
                conn.connection.disconnect()
            with contextlib.suppress(redis.RedisError):
                conn.close()
        try:
            self.client.nodes_manager.initialize()
        except Exception as exc:  # the cluster may be mid-failover: the next read retries
            log.debug("refreshing the cluster's slot map failed: %s", exc)

    def interrupt(self) -> None:
        blocked = self._blocked
        if blocked is not None:
            node, conn_id = blocked
            with contextlib.suppress(redis.RedisError):
                assert node.redis_connection is not None
                node.redis_connection.client_unblock(conn_id)


def stream_reads(client: RedisClient) -> ServerReads | ClusterReads:
    if isinstance(client, RedisCluster):
        return ClusterReads(client)
    return ServerReads(client)
