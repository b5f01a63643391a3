"""Automatic batch sizes: from what nodes measured, and how many serve the queue.

A batch is the unit a node reads, holds and records at once, and every batch
costs a fixed amount (about half a millisecond of reads, writes and hand-offs,
see docs/performance.md) whatever it holds. So batches should be large, but a
job needs enough of them that every node serving its queue gets work, and a
batch should not hold a node for long (a crashed node's batch runs again;
results come back a batch at a time). The rules, for a job of ``total`` items
of a function whose cost per item nodes published (``keys.cost``):

- at most ``BATCH_SECONDS`` of one node's work (its processes together);
- at least ``BATCHES_PER_NODE`` batches per live node serving the queue;
- at most ``MAX_BATCH`` items; the enqueuer also splits a batch whose encoding
  passes ``MAX_BATCH_BYTES`` (see ``producer.enqueue``);
- the job's items spread evenly over the batches that makes.

With no published cost (a function no node has run yet) batches stay small,
about ``UNKNOWN_COST_BATCHES`` per job, or ``BATCHES_PER_NODE`` per live node
when there are more nodes, of at most ``UNKNOWN_COST_MAX`` items: a slow
function still spreads over every node from the first moment, and nodes
measure it within the first batches.
With no length (a generator), batches ramp up 1, 2, 4, ... so the first
results come back fast, to the size the rules above give per node, or to
``RAMP_MAX_UNKNOWN`` items with no published cost.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from taskfan import keys
from taskfan.connection import RedisClient
from taskfan.cost import parse_cost
from taskfan.fields import queue_names

BATCH_SECONDS = 2.0
BATCHES_PER_NODE = 4
MAX_BATCH = 25_000
MAX_BATCH_BYTES = 4 * 1024 * 1024
UNKNOWN_COST_BATCHES = 64
UNKNOWN_COST_MAX = 1000
RAMP_MAX_UNKNOWN = 256
#: nodes whose last heartbeat is older than this are not counted
NODE_WINDOW_SECONDS = 60.0
#: a Client reads the node registry again after this many seconds
CAPACITY_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class Capacity:
    """The live nodes serving a queue: how many, and processes per node."""

    nodes: int
    processes: int  #: per node (the median)

    @staticmethod
    def unknown() -> Capacity:
        """No node has published: assume one like this machine."""
        return Capacity(nodes=1, processes=os.cpu_count() or 1)


@dataclass(frozen=True)
class BatchPlan:
    """A fixed batch size, or a ramp 1, 2, 4, ... up to ``ramp_max``."""

    size: int  #: 0: ramp
    ramp_max: int = RAMP_MAX_UNKNOWN


def plan(total: int | None, cost: float | None, capacity: Capacity) -> BatchPlan:
    """The batch sizes for a job of ``total`` items (None: unknown length)."""
    if cost is None:
        if total is None:
            return BatchPlan(0, RAMP_MAX_UNKNOWN)
        batches = max(UNKNOWN_COST_BATCHES, BATCHES_PER_NODE * max(1, capacity.nodes))
        return BatchPlan(_even(total, min(UNKNOWN_COST_MAX, _ceil(total, batches))))
    by_time = MAX_BATCH if cost <= 0 else int(BATCH_SECONDS * capacity.processes / cost)
    per_node = max(1, min(MAX_BATCH, by_time))
    if total is None:
        return BatchPlan(0, per_node)
    spread = _ceil(total, BATCHES_PER_NODE * max(1, capacity.nodes))
    return BatchPlan(_even(total, min(per_node, spread)))


def _ceil(a: int, b: int) -> int:
    return max(1, -(-a // b))


def _even(total: int, size: int) -> int:
    """The smallest size that cuts ``total`` into as many batches as ``size`` does."""
    if total <= 0:
        return max(1, size)
    return _ceil(total, math.ceil(total / max(1, size)))


class CostBoard:
    """Reads function costs and the node registry; one Client keeps one.

    The registry changes slowly and is cached for ``CAPACITY_CACHE_SECONDS``.
    A cost is read before every map (it rides in the same round trip), unless
    the results of a job of the function were read within that time: that
    read also brings the function's cost, as the nodes published it once the
    job was done (``remember``), which is what a read before the next map
    would find. So a producer that maps, reads the results and maps again
    waits for no round trip before enqueuing.
    """

    def __init__(self, client: RedisClient, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.clock = clock
        self._capacity: dict[str, tuple[float, Capacity]] = {}
        #: function -> (when, its cost), read with a job's results
        self._after_results: dict[str, tuple[float, float | None]] = {}

    def remember(self, fn_ref: str, raw: bytes | str | None) -> None:
        """The function's published cost (raw), read together with a job's results."""
        if len(self._after_results) > 1000:
            self._after_results.clear()
        self._after_results[fn_ref] = (self.clock(), parse_cost(raw))

    def forget(self, fn_ref: str) -> None:
        """Read the function's cost from Redis at its next map."""
        self._after_results.pop(fn_ref, None)

    def read(self, queue: str, fn_ref: str) -> tuple[float | None, Capacity]:
        now = self.clock()
        cached = self._capacity.get(queue)
        fresh = cached is not None and now - cached[0] < CAPACITY_CACHE_SECONDS
        known = self._after_results.pop(fn_ref, None)
        if known is not None and now - known[0] < CAPACITY_CACHE_SECONDS:
            if fresh:
                assert cached is not None
                return known[1], cached[1]
            return known[1], self._read_capacity(queue, None)
        pipe = self.client.pipeline(transaction=False)
        pipe.get(keys.cost(fn_ref))
        if not fresh:
            pipe.zrangebyscore(keys.NODES, time.time() - NODE_WINDOW_SECONDS, "+inf")
        replies = pipe.execute()
        cost = parse_cost(replies[0])
        if fresh:
            assert cached is not None
            return cost, cached[1]
        return cost, self._read_capacity(queue, replies[1])

    def _read_capacity(self, queue: str, node_ids: Any) -> Capacity:
        """The queue's capacity from the live node ids (read here when None), cached."""
        if node_ids is None:
            node_ids = self.client.zrangebyscore(
                keys.NODES, time.time() - NODE_WINDOW_SECONDS, "+inf"
            )
        capacity = self._capacity_of(queue, list(node_ids))
        self._capacity[queue] = (self.clock(), capacity)
        return capacity

    def _capacity_of(self, queue: str, node_ids: list[bytes]) -> Capacity:
        if not node_ids:
            return Capacity.unknown()
        pipe = self.client.pipeline(transaction=False)
        for node_id in node_ids:
            with contextlib.suppress(ValueError):  # not a node id: nobody's record
                pipe.hmget(keys.node(node_id.decode("utf-8", "replace")), "processes", "queues")
        processes = []
        for found, queues in pipe.execute():
            if found is None or queue not in queue_names(queues):
                continue
            try:
                processes.append(max(1, int(found)))
            except ValueError:
                continue
        if not processes:
            return Capacity.unknown()
        processes.sort()
        return Capacity(nodes=len(processes), processes=processes[len(processes) // 2])
