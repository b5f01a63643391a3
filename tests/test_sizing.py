"""Automatic sizes: batch sizes from published costs (producer), chunk sizes (node)."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest
import redis

from producer import Client, sizing
from producer.sizing import BatchPlan, Capacity, CostBoard, plan
from taskfan import keys
from taskfan.codec import PICKLE
from taskfan.cost import COST_TTL, encode_cost, parse_cost
from taskfan.keys import QueueKeys
from taskfan.protocol import BatchEntry
from tests import tasks
from tests.helpers import wait_until
from worker.core.chunk_sizing import (
    CHUNKS_PER_PROCESS,
    REPUBLISH_SECONDS,
    TARGET_SECONDS,
    ChunkSizer,
)

ONE_NODE = Capacity(nodes=1, processes=2)


def entries(r: redis.Redis, queue: str = "default") -> list[BatchEntry]:
    raw: Any = r.xrange(QueueKeys(queue).stream)
    return [BatchEntry.parse(fields, entry_id.decode()) for entry_id, fields in raw]


# ----------------------------------------------------------------- the rules


def test_unknown_cost_keeps_batches_small() -> None:
    assert plan(6400, None, ONE_NODE) == BatchPlan(100)
    assert plan(10**6, None, ONE_NODE) == BatchPlan(sizing.UNKNOWN_COST_MAX)
    assert plan(None, None, ONE_NODE) == BatchPlan(0, sizing.RAMP_MAX_UNKNOWN)


def test_cheap_items_spread_over_the_nodes_in_few_batches() -> None:
    # 1 us an item: time allows the maximum, the spread rule decides
    assert plan(100_000, 1e-6, ONE_NODE).size == 100_000 // sizing.BATCHES_PER_NODE
    four = Capacity(nodes=4, processes=2)
    assert plan(100_000, 1e-6, four).size == 100_000 // (4 * sizing.BATCHES_PER_NODE)
    assert plan(10**8, 1e-6, ONE_NODE).size == sizing.MAX_BATCH


def test_costly_items_get_a_few_seconds_of_a_node_per_batch() -> None:
    cost = 0.01  # 10 ms an item, 2 processes: 2 s of the node is 400 items
    size = plan(160_000, cost, ONE_NODE).size
    assert size == int(sizing.BATCH_SECONDS * 2 / cost)
    bigger_nodes = plan(160_000, cost, Capacity(nodes=1, processes=8)).size
    assert bigger_nodes == 4 * size


def test_batches_split_a_job_evenly() -> None:
    # the spread rule asks 20,001 of 80,001 items: 4 batches of 20,001 (not 3 and
    # one of 19,998); the maximum cuts 100,001 items into 5 batches of 20,001
    assert plan(80_001, 1e-6, ONE_NODE).size == 20_001
    assert plan(100_001, 1e-6, ONE_NODE).size == 20_001
    assert plan(10, 2.0, ONE_NODE).size == 2  # 2 s of 2 processes at 2 s an item


def test_a_generator_ramps_to_the_node_s_share() -> None:
    assert plan(None, 0.01, ONE_NODE) == BatchPlan(0, 400)
    assert plan(None, 0.0, ONE_NODE) == BatchPlan(0, sizing.MAX_BATCH)


@pytest.mark.parametrize("raw", [None, b"", b"nan", b"-1", b"inf", b"x"])
def test_a_bad_published_cost_counts_as_none(raw: bytes | None) -> None:
    assert parse_cost(raw) is None


def test_costs_round_trip() -> None:
    assert parse_cost(encode_cost(3.5e-7).encode()) == 3.5e-7


# ----------------------------------------------------------------- reading Redis


def publish_node(r: Any, node_id: str, processes: int, queues: str, age: float = 0.0) -> None:
    r.hset(keys.node(node_id), mapping={"processes": processes, "queues": queues})
    r.zadd(keys.NODES, {node_id: time.time() - age})


def test_the_board_counts_live_nodes_of_the_queue(fake: Any) -> None:
    publish_node(fake, "a", 2, "default,other")
    publish_node(fake, "b", 8, "default")
    publish_node(fake, "c", 4, "default")
    publish_node(fake, "d", 16, "other")  # another queue
    publish_node(fake, "e", 32, "default", age=sizing.NODE_WINDOW_SECONDS + 5)  # silent
    fake.zadd(keys.NODES, {"f": time.time()})  # its record expired
    fake.zadd(keys.NODES, {"not a node": time.time()})  # garbage
    fake.set(keys.cost("m:f"), encode_cost(0.25))
    cost, capacity = CostBoard(fake).read("default", "m:f")
    assert cost == 0.25
    assert capacity == Capacity(nodes=3, processes=4)  # median of 2, 4, 8


def test_the_board_reads_queues_as_nodes_write_them(fake: Any) -> None:
    """Nodes write their queues as a JSON list (a name may hold a comma): the
    board must count them, or every node looks like none and batches are sized
    for one node like this machine (issue 19: 32 one-process nodes got batches
    for 1 node of 2 processes)."""
    publish_node(fake, "a", 1, json.dumps(["default", "x,y"]))
    publish_node(fake, "b", 1, json.dumps(["x,y"]))
    publish_node(fake, "c", 1, json.dumps(["default"]))
    assert CostBoard(fake).read("default", "m:f")[1] == Capacity(nodes=2, processes=1)
    assert CostBoard(fake).read("x,y", "m:f")[1] == Capacity(nodes=2, processes=1)


def test_with_no_node_the_board_assumes_one_like_this_machine(fake: Any) -> None:
    assert CostBoard(fake).read("default", "m:f") == (None, Capacity.unknown())


def test_the_board_caches_the_registry_not_the_cost(fake: Any) -> None:
    now = [100.0]
    board = CostBoard(fake, clock=lambda: now[0])
    publish_node(fake, "a", 2, "default")
    assert board.read("default", "m:f") == (None, Capacity(1, 2))
    publish_node(fake, "b", 2, "default")
    fake.set(keys.cost("m:f"), encode_cost(0.5))
    assert board.read("default", "m:f") == (0.5, Capacity(1, 2))
    now[0] += sizing.CAPACITY_CACHE_SECONDS
    assert board.read("default", "m:f") == (0.5, Capacity(2, 2))


# ----------------------------------------------------------------- enqueue


def test_a_published_cost_sizes_the_job_s_batches(fake: Any) -> None:
    publish_node(fake, "a", 2, "default")
    fake.set(keys.cost(f"{tasks.__name__}:square"), encode_cost(1e-6))
    Client(fake).map(tasks.square, range(10_000))
    assert [e.count for e in entries(fake)] == [2500] * 4


def test_a_fixed_batch_size_reads_no_cost(r: redis.Redis) -> None:
    r.config_resetstat()
    Client(r).map(tasks.square, range(10), batch_size=5)
    assert "cmdstat_get" not in r.info("commandstats")


def test_batches_that_encode_too_large_are_split(fake: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(sizing, "MAX_BATCH_BYTES", 10_000)
    items = [i.to_bytes(2, "big") * 500 for i in range(100)]  # 100 kB, no two alike
    publish_node(fake, "a", 2, "default")
    fake.set(keys.cost(f"{tasks.__name__}:identity"), encode_cost(1e-6))
    job = Client(fake).map(tasks.identity, items)  # 4 batches of 25 kB, were it not split
    sent = entries(fake)
    assert len(sent) > 4
    assert all(len(e.payload) <= 10_000 for e in sent)
    assert list(itertools.chain.from_iterable(PICKLE.loads(e.payload) for e in sent)) == items
    assert [e.index for e in sent] == list(range(len(sent)))
    assert job.meta().total == 100


def test_split_batches_shrink_the_ones_after(fake: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(sizing, "MAX_BATCH_BYTES", 10_000)
    items = (i.to_bytes(2, "big") * 500 for i in range(100))  # no length: a ramp
    Client(fake).map(tasks.identity, items)
    counts = [e.count for e in entries(fake)]
    assert sum(counts) == 100
    assert max(counts) < 10  # ramp 1, 2, 4, 8, then no more than what fits


def test_a_fixed_batch_size_is_never_split(fake: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(sizing, "MAX_BATCH_BYTES", 10_000)
    Client(fake).map(tasks.identity, [bytes([i]) * 1000 for i in range(100)], batch_size=50)
    assert [e.count for e in entries(fake)] == [50, 50]


# ----------------------------------------------------------------- the node


def test_chunks_aim_at_the_target_duration() -> None:
    sizer = ChunkSizer(processes=2)
    sizer.observe("m:f", 10, 10 * 0.001)  # 1 ms an item
    assert sizer.chunksize("m:f", 100_000) == int(TARGET_SECONDS / 0.001)


def test_chunks_leave_every_process_several_per_batch() -> None:
    sizer = ChunkSizer(processes=2)
    sizer.observe("m:f", 1000, 1000 * 1e-7)  # cheap: the time target allows huge chunks
    assert sizer.chunksize("m:f", 50_000) == 50_000 // (2 * CHUNKS_PER_PROCESS)
    assert sizer.chunksize("m:new", 80) == 80 // (2 * CHUNKS_PER_PROCESS)  # not measured yet
    assert sizer.chunksize("m:f", 3) == 1


def test_asked_and_fixed_chunksizes_win() -> None:
    assert ChunkSizer(2).chunksize("m:f", 1000, asked=7) == 7
    assert ChunkSizer(2, fixed=9).chunksize("m:f", 1000) == 9


def test_a_cost_is_published_when_new_moved_or_due() -> None:
    sizer = ChunkSizer(processes=2)
    assert sizer.to_publish("m:f", now=0.0) is None  # nothing measured
    sizer.observe("m:f", 1, 1.0)
    assert sizer.to_publish("m:f", now=0.0) == 1.0
    assert sizer.to_publish("m:f", now=1.0) is None  # unchanged
    sizer.observe("m:f", 1, 1.1)  # the average moves 3%
    assert sizer.to_publish("m:f", now=2.0) is None
    assert sizer.to_publish("m:f", now=REPUBLISH_SECONDS) is not None  # due again
    sizer.observe("m:f", 1, 5.0)  # moves a lot
    assert sizer.to_publish("m:f", now=REPUBLISH_SECONDS + 1) == sizer.cost("m:f")


def test_a_node_publishes_the_cost_it_measured(r: redis.Redis, start_worker: Any) -> None:
    start_worker(processes=1)  # not this machine's core count: Capacity.unknown()'s
    client = Client(r)
    list(client.map(tasks.nap_square, range(8), batch_size=4).results(timeout=60))
    key = keys.cost(f"{tasks.__name__}:nap_square")
    wait_until(lambda: r.exists(key), timeout=30, message="the cost published")
    cost = parse_cost(r.get(key))
    assert cost is not None and cost >= 0.001  # nap_square naps a millisecond
    assert 0 < r.ttl(key) <= COST_TTL
    # and the producer sizes the next job of it from the cost and the node
    wait_until(lambda: r.zcard(keys.NODES) > 0, timeout=30, message="the node's record")
    cost_now, capacity = CostBoard(r).read("default", f"{tasks.__name__}:nap_square")
    assert capacity == Capacity(nodes=1, processes=1)
    assert cost_now is not None
    job = Client(r).map(tasks.nap_square, range(1000))
    assert job.meta().batch_size == plan(1000, cost_now, capacity).size
    assert job.meta().batch_size > plan(1000, None, capacity).size  # larger than unknown
