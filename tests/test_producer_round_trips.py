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
from taskfan import scripts
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

        pipe.execute = counted
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
    # the job's meta, then one round trip: the events read, with the results
    # read in the same pipeline
    assert counting.trips == ["hgetall", "xread+hmget"], counting.trips


def test_results_read_with_the_events_keep_a_retry_round_s_overlays(r: redis.Redis) -> None:
    """Results fetched with the events are a batch's entry and its retries'
    entries, as read before."""
    job = Client(r).map(tasks.square, range(10), batch_size=5)
    for index, start in enumerate((0, 5)):
        values: list[Any] = [x * x for x in range(start, start + 5)]
        errors: list[Any] = []
        if index == 1:
            values[0] = None
            errors = [[0, "ValueError", "bad", "Traceback ...", None, 5]]
        blob = pickle.dumps([values, errors, []], protocol=5)
        entry = encode_result(start, 5, len(errors), [blob])
        scripts.record_batch(r, JobKeys(job.id), index, entry, 5 - len(errors), len(errors), 0.0)
    assert job.retry_failed() == 1
    retried = pickle.dumps([[25], [], []], protocol=5)
    entry = encode_result(5, 1, 0, [retried], offsets=[0])
    assert scripts.record_batch(r, JobKeys(job.id), "1.1", entry, 1, 0, 0.0) > 0
    assert list(job.results(timeout=10)) == [x * x for x in range(10)]
