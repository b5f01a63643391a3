"""A producer's wake-up on a job's events brings their results (issue 19).

Across a network every round trip a producer waits for is added to a job's
time. So each wake-up on the job's events brings the results of the batches it
announces in the same round trip (the events read and the results read go out
in one pipeline), the last wake-up of a job included. The "node" here is the
test itself: it records batches as a node would, with record.lua.
"""

from __future__ import annotations

import pickle
import time
from typing import Any

import pytest
import redis

from producer import Client
from producer.sizing import CAPACITY_CACHE_SECONDS, CostBoard
from taskfan import keys, scripts
from taskfan.cost import encode_cost
from taskfan.keys import JobKeys
from taskfan.outcomes import encode_result
from tests import tasks


class Counting(redis.Redis):
    """A client that lists each round trip it makes: a command's name, or a
    pipeline's command names joined with ``+``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trips: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.trips.append(str(args[0]).lower())
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def counted(raise_on_error: bool = True) -> Any:
            names = [str(args[0]).lower() for args, _ in pipe.command_stack]
            if names:
                self.trips.append("+".join(names))
            return execute(raise_on_error)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe


@pytest.fixture
def counting(redis_url: str) -> Any:
    client = Counting.from_url(redis_url)
    yield client
    client.close()


def record_all(r: redis.Redis, job_id: str, batch_size: int, total: int) -> None:
    """Record every batch of a job of ``tasks.square`` over ``range(total)``, as a node would."""
    for index, start in enumerate(range(0, total, batch_size)):
        values = [x * x for x in range(start, min(total, start + batch_size))]
        blob = pickle.dumps([values, [], []], protocol=5)
        entry = encode_result(start, len(values), 0, [blob])
        code = scripts.record_batch(r, JobKeys(job_id), index, entry, len(values), 0, time.time())
        assert code in (scripts.RECORDED, scripts.RECORDED_LAST)


def test_a_wake_up_brings_the_results_it_announces(counting: Counting, r: redis.Redis) -> None:
    job = Client(counting).map(tasks.square, range(10), batch_size=5)
    record_all(r, job.id, 5, 10)
    counting.trips.clear()
    assert list(job.results(timeout=10)) == [x * x for x in range(10)]
    # one round trip: the job's meta, the events read, the results (and the
    # function's cost) read in the same pipeline
    assert counting.trips == ["hgetall+xread+hmget+get"], counting.trips


def test_a_reattached_handle_reads_the_meta_first(counting: Counting, r: redis.Redis) -> None:
    """A handle from ``Client.job(id)`` knows nothing of the job: it reads the
    meta before it waits (a job that does not exist is said at once, not after a
    blocked read)."""
    job = Client(r).map(tasks.square, range(10), batch_size=5)
    record_all(r, job.id, 5, 10)
    counting.trips.clear()
    assert list(Client(counting).job(job.id).results(timeout=10)) == [x * x for x in range(10)]
    assert counting.trips[0] == "hgetall", counting.trips


def _record_two_batches_one_item_failed(r: redis.Redis, job_id: str) -> None:
    """Record the job's batches 0 and 1 (items 0-4, 5-9) as a node would, item 5
    failed."""
    for index, start in enumerate((0, 5)):
        values: list[Any] = [x * x for x in range(start, start + 5)]
        errors: list[Any] = []
        if index == 1:
            values[0] = None
            errors = [[0, "ValueError", "bad", "Traceback ...", None, 5]]
        blob = pickle.dumps([values, errors, []], protocol=5)
        entry = encode_result(start, 5, len(errors), [blob])
        scripts.record_batch(r, JobKeys(job_id), index, entry, 5 - len(errors), len(errors), 0.0)


def test_a_map_s_handle_reads_a_retried_job_s_overlays(counting: Counting, r: redis.Redis) -> None:
    """The meta read with the first events is the one Redis holds then: a
    retry round another process sent shows (its overlays), as a meta read
    first would show it."""
    job = Client(counting).map(tasks.square, range(10), batch_size=5)
    _record_two_batches_one_item_failed(r, job.id)
    assert Client(r).job(job.id).retry_failed() == 1  # another process retries
    retried = pickle.dumps([[25], [], []], protocol=5)
    entry = encode_result(5, 1, 0, [retried], offsets=[0])
    assert scripts.record_batch(r, JobKeys(job.id), "1.1", entry, 1, 0, 0.0) > 0
    counting.trips.clear()
    assert list(job.results(timeout=10)) == [x * x for x in range(10)]
    assert counting.trips[0].startswith("hgetall+xread"), counting.trips


def test_results_read_with_the_events_keep_a_retry_round_s_overlays(r: redis.Redis) -> None:
    """Results fetched with the events are a batch's entry and its retries'
    entries, as read before."""
    job = Client(r).map(tasks.square, range(10), batch_size=5)
    _record_two_batches_one_item_failed(r, job.id)
    assert job.retry_failed() == 1
    retried = pickle.dumps([[25], [], []], protocol=5)
    entry = encode_result(5, 1, 0, [retried], offsets=[0])
    assert scripts.record_batch(r, JobKeys(job.id), "1.1", entry, 1, 0, 0.0) > 0
    assert list(job.results(timeout=10)) == [x * x for x in range(10)]


def test_the_next_map_sizes_from_the_cost_read_with_the_last_results(
    counting: Counting, r: redis.Redis
) -> None:
    """The results read of a job also reads its function's cost (same pipeline):
    a map of that function right after sizes from it, without a round trip of
    its own. It is the cost the nodes published once the job was done, which a
    read before the map would find too."""
    client = Client(counting)
    job = client.map(tasks.square, range(10), batch_size=5)
    record_all(r, job.id, 5, 10)
    r.set(keys.cost(f"{tasks.__name__}:square"), encode_cost(1e-6))  # as its node publishes
    list(job.results(timeout=10))
    counting.trips.clear()
    job = client.map(tasks.square, range(10_000))
    assert not any(trip.startswith("get") for trip in counting.trips), counting.trips
    assert job.meta().batch_size == 2500  # sized from the cost read with the results


def test_a_cost_read_before_a_map_is_not_reused(counting: Counting) -> None:
    """Only a cost read after a job's results counts as fresh: the one read
    before a map is read again at the next map (the job may have moved it)."""
    client = Client(counting)
    counting.set(keys.cost(f"{tasks.__name__}:square"), encode_cost(1e-6))
    counting.trips.clear()
    client.map(tasks.square, range(10))
    client.map(tasks.square, range(10))
    assert sum(trip.startswith("get") for trip in counting.trips) == 2, counting.trips


def test_a_cost_read_with_results_is_reused_only_briefly(r: redis.Redis) -> None:
    now = [100.0]
    board = CostBoard(r, clock=lambda: now[0])
    board.remember("m:f", encode_cost(0.5).encode())
    assert board.read("default", "m:f")[0] == 0.5
    r.set(keys.cost("m:f"), encode_cost(0.25))
    now[0] += CAPACITY_CACHE_SECONDS
    assert board.read("default", "m:f")[0] == 0.25


def test_a_forgotten_cost_is_read_again(r: redis.Redis) -> None:
    board = CostBoard(r)
    board.remember("m:f", encode_cost(0.5))
    board.forget("m:f")
    assert board.read("default", "m:f")[0] is None  # none published
