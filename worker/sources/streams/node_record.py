"""The node record: publishing it with the heartbeat, removing it (and the
consumer) on the way out, reading the other nodes' records, and the queue
depths a node reports."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from redis.exceptions import ResponseError

from taskfan import keys
from taskfan.keys import GROUP
from worker.core.unrunnable import Peer, parse_peer
from worker.sources.streams.redis_groups import NodeRedisBase, lost_group


class NodeRecord(NodeRedisBase):
    def peers(self) -> list[Peer]:
        """The other live nodes (their record has not expired), with the queues
        they serve and the functions they cannot run: two round trips."""
        listed: Any = self.client.zrange(keys.NODES, 0, -1)
        named = []
        pipe = self.client.pipeline(transaction=False)
        for raw in listed:
            node_id = raw.decode("utf-8", "replace")
            if node_id == self.node_id:
                continue
            try:
                pipe.hmget(keys.node(node_id), "queues", "cannot_run", "heartbeat_at")
            except ValueError:  # not a node id: someone else wrote it
                continue
            named.append(node_id)
        out = []
        for node_id, (queues, cannot_run, beat) in zip(named, pipe.execute(), strict=True):
            if beat is not None:  # else its record expired: that node is gone
                out.append(parse_peer(node_id, queues, cannot_run))
        return out

    def publish(self, record: dict[str, Any], ttl: float) -> None:
        """Write the node record and heartbeat; the record expires if the node dies."""
        key = keys.node(self.node_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping={k: str(v) for k, v in record.items()})
        pipe.expire(key, max(1, int(ttl)))
        pipe.zadd(keys.NODES, {self.node_id: time.time()})
        sent = time.perf_counter()
        pipe.execute()
        self.round_trips.observe(time.perf_counter() - sent)

    def unpublish(self) -> None:
        """Remove the node record, and the consumer when Redis says it holds nothing.

        XGROUP DELCONSUMER drops the consumer's pending entries, so it must not
        run while any are left, handed back ones included: those wait there for
        other nodes to reclaim them.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(keys.node(self.node_id))
        pipe.zrem(keys.NODES, self.node_id)
        pipe.execute(raise_on_error=False)
        for queue in self.queues:
            try:
                left = self.client.xpending_range(
                    queue.stream, GROUP, min="-", max="+", count=1, consumername=self.node_id
                )
            except ResponseError as exc:
                if not lost_group(exc):
                    raise
                continue  # no group, no consumer left to remove
            if not left:
                self.client.xgroup_delconsumer(queue.stream, GROUP, self.node_id)

    def queue_depths(self) -> dict[str, tuple[int, int, int]]:
        """Per queue served: batches waiting, in flight (pending), dead letters."""
        pipe = self.client.pipeline(transaction=False)
        for queue in self.queues:
            pipe.xlen(queue.stream)
            pipe.xpending(queue.stream, GROUP)
            pipe.xlen(queue.dead)
        replies = pipe.execute(raise_on_error=False)
        out = {}
        for i, queue in enumerate(self.queues):
            length, pending, dead = replies[3 * i : 3 * i + 3]
            length = length if isinstance(length, int) else 0
            in_flight = int(pending["pending"]) if isinstance(pending, dict) else 0
            out[queue.name] = (
                max(0, length - in_flight),
                in_flight,
                dead if isinstance(dead, int) else 0,
            )
        return out


def new_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"
