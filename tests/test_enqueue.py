"""Enqueueing alone (fakeredis and real Redis): batching, laziness, abort."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from producer import Client, records
from taskfan.codec import PICKLE
from taskfan.errors import EncodeError
from taskfan.keys import QueueKeys
from taskfan.protocol import BatchEntry
from tests import tasks

STREAM = QueueKeys("default").stream


def entries(r: redis.Redis) -> list[BatchEntry]:
    raw: Any = r.xrange(STREAM)
    return [BatchEntry.parse(fields, entry_id.decode()) for entry_id, fields in raw]


def test_batches_carry_every_item_once_in_order(any_redis: redis.Redis) -> None:
    job = Client(any_redis).map(tasks.square, range(1000), batch_size=64)
    sent = entries(any_redis)
    assert [e.index for e in sent] == list(range(16))
    assert [e.start for e in sent] == [64 * i for i in range(16)]
    assert list(itertools.chain.from_iterable(PICKLE.loads(e.payload) for e in sent)) == list(
        range(1000)
    )
    meta = job.meta()
    assert (meta.total, meta.batches, meta.sealed, meta.status) == (1000, 16, True, "queued")


def test_an_iterable_without_length_ramps_its_batches(any_redis: redis.Redis) -> None:
    Client(any_redis).map(tasks.square, (x for x in range(20)))
    assert [e.count for e in entries(any_redis)] == [1, 2, 4, 8, 5]


def test_a_sized_iterable_aims_for_many_batches(any_redis: redis.Redis) -> None:
    Client(any_redis).map(tasks.square, list(range(6400)))
    assert {e.count for e in entries(any_redis)} == {100}


def test_a_small_job_is_born_sealed_in_one_round_trip(r: redis.Redis) -> None:
    r.config_resetstat()
    job = Client(r).submit(tasks.add, 1, b=2)
    calls = {k: v for k, v in r.info("commandstats").items() if not k.endswith("config|resetstat")}
    assert job.meta().sealed
    assert "cmdstat_evalsha" not in calls  # no seal script: the meta was written sealed
    assert calls["cmdstat_xadd"]["calls"] == 1


def test_a_job_s_first_batch_goes_out_before_the_rest_is_encoded(r: redis.Redis) -> None:
    # Four batches of 1,000 items of 300 bytes (about 300 KB each): nodes can
    # start on the first while the producer encodes the others, instead of
    # idling until the whole job is encoded (about 10 ms for 100,000 small items).
    seen_before: dict[int, int] = {}

    def items() -> Iterator[bytes]:
        for i in range(4000):
            if i % 1000 == 0:
                seen_before[i // 1000] = r.xlen(STREAM)
            yield i.to_bytes(300, "big")  # a new object each: no pickle memo

    job = Client(r).map(tasks.identity, items(), batch_size=1000)
    assert seen_before[1] == 1  # batch 0 was sent before batch 1's items were taken
    assert r.xlen(STREAM) == 4
    meta = job.meta()
    assert (meta.total, meta.batches, meta.sealed) == (4000, 4, True)


def test_a_generator_of_a_million_items_keeps_memory_flat(r: redis.Redis) -> None:
    tracemalloc.start()
    try:
        job = Client(r).map(tasks.noop, (i for i in range(1_000_000)), batch_size=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert job.meta().total == 1_000_000
    # A million ints held at once would take tens of MB; a few batches take well under.
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_an_iterable_that_raises_leaves_nothing_behind(r: redis.Redis) -> None:
    def items() -> Iterator[int]:
        yield from range(5000)
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        Client(r).map(tasks.square, items(), batch_size=10)
    assert r.xlen(STREAM) == 0
    assert r.zcard(QueueKeys("default").jobs) == 0
    assert not [k for k in r.keys("*") if b"{j:" in k]


def test_an_unencodable_item_names_the_items(r: redis.Redis) -> None:
    client = Client(r, codec="json")
    with pytest.raises(EncodeError, match=r"item 3 cannot be encoded with the json codec"):
        client.map(tasks.identity, [0, 1, 2, {3}, 4], batch_size=5)
    assert not [k for k in r.keys("*") if b"{j:" in k]


def test_the_queue_s_job_index_keeps_only_the_newest(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "JOBS_INDEXED", 3)
    client = Client(r)
    jobs = [client.map(tasks.square, [i]) for i in range(5)]
    indexed: Any = r.zrange(QueueKeys("default").jobs, 0, -1)
    assert [j.decode() for j in indexed] == [job.id for job in jobs[2:]]
