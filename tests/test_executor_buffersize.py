"""``Executor.map(..., buffersize=N)``: Python 3.14's bounded map, on every Python.

The first tests are CPython 3.14's own (Lib/test/test_concurrent_futures/
executor.py, ``test_map_buffersize_*``), run against a real node; the rest pin
the bound with an instrumented input."""

from __future__ import annotations

import itertools
from typing import cast

import pytest
import redis

from producer import Executor
from taskfan.keys import JobKeys, QueueKeys
from tests import tasks
from tests.helpers import Counting
from tests.workers import WorkerProcess


@pytest.mark.parametrize("buffersize", ["foo", 2.0])
def test_buffersize_type_validation(redis_url: str, buffersize: object) -> None:
    with (
        Executor(redis_url) as executor,
        pytest.raises(TypeError, match="buffersize must be an integer or None"),
    ):
        executor.map(str, range(4), buffersize=buffersize)  # type: ignore[arg-type]


@pytest.mark.parametrize("buffersize", [0, -1])
def test_buffersize_value_validation(redis_url: str, buffersize: int) -> None:
    with (
        Executor(redis_url) as executor,
        pytest.raises(ValueError, match=r"buffersize must be None or > 0"),
    ):
        executor.map(str, range(4), buffersize=buffersize)


def test_buffersize_validation_happens_at_the_call(redis_url: str) -> None:
    """Checked before anything is read or sent, like the stdlib's."""
    counting = Counting()
    with Executor(redis_url) as executor, pytest.raises(ValueError):
        executor.map(tasks.square, counting, buffersize=0)
    assert counting.taken == 0


def test_map_buffersize(redis_url: str, node: WorkerProcess) -> None:
    ints = range(4)
    for buffersize in (1, 2, len(ints), len(ints) * 2):
        with Executor(redis_url) as executor:
            res = executor.map(str, ints, buffersize=buffersize)
            assert list(res) == ["0", "1", "2", "3"]


def test_map_buffersize_on_multiple_iterables(redis_url: str, node: WorkerProcess) -> None:
    ints = range(4)
    for buffersize in (1, 2, len(ints), len(ints) * 2):
        with Executor(redis_url) as executor:
            res = executor.map(tasks.add, ints, ints, buffersize=buffersize)
            assert list(res) == [0, 2, 4, 6]


def test_map_buffersize_on_infinite_iterable(redis_url: str, node: WorkerProcess) -> None:
    with Executor(redis_url) as executor:
        res = executor.map(str, itertools.count(), buffersize=2)
        assert next(res, None) == "0"
        assert next(res, None) == "1"
        assert next(res, None) == "2"
        res.close()  # type: ignore[attr-defined]


def test_map_buffersize_on_multiple_infinite_iterables(redis_url: str, node: WorkerProcess) -> None:
    with Executor(redis_url) as executor:
        res = executor.map(tasks.add, itertools.count(), itertools.count(), buffersize=2)
        assert next(res, None) == 0
        assert next(res, None) == 2
        assert next(res, None) == 4
        res.close()  # type: ignore[attr-defined]


def test_map_buffersize_on_empty_iterable(redis_url: str) -> None:
    with Executor(redis_url) as executor:
        res = executor.map(str, [], buffersize=2)
        assert next(res, None) is None


def test_map_buffersize_without_iterable(redis_url: str) -> None:
    with Executor(redis_url) as executor:
        res = executor.map(str, buffersize=2)
        assert next(res, None) is None


def test_map_buffersize_when_buffer_is_full(redis_url: str, node: WorkerProcess) -> None:
    ints = iter(range(4))
    buffersize = 2
    with Executor(redis_url) as executor:
        executor.map(str, ints, buffersize=buffersize)
    assert next(ints) == buffersize, "should have fetched only `buffersize` elements"


def test_never_more_than_buffersize_ahead_of_the_consumer(
    redis_url: str, node: WorkerProcess
) -> None:
    counting = Counting()
    with Executor(redis_url) as executor:
        results = executor.map(tasks.square, counting, buffersize=3)
        assert counting.taken == 3  # submitted before the first value is asked for
        for consumed, value in enumerate(itertools.islice(results, 40), start=1):
            assert value == (consumed - 1) ** 2
            assert counting.taken - consumed <= 3
        results.close()  # type: ignore[attr-defined]
        assert counting.taken <= 43


def test_an_endless_buffered_map_holds_about_buffersize_in_redis(
    redis_url: str, node: WorkerProcess, r: redis.Redis
) -> None:
    """Each result read is freed in Redis, and closing the map cancels the rest."""
    queue = QueueKeys("default")
    with Executor(redis_url) as executor:
        results = executor.map(tasks.square, itertools.count(), buffersize=4)
        for index, value in enumerate(itertools.islice(results, 1_000)):
            assert value == index * index
            if index % 100 == 99:
                ids = cast(list[bytes], r.zrange(queue.jobs, 0, -1))
                (job_id,) = [raw.decode() for raw in ids]
                assert r.hlen(JobKeys(job_id).results) <= 4 + 1
                assert r.xlen(JobKeys(job_id).events) <= 4 + 1 + 16 + 4 + 1
                assert r.xlen(queue.stream) <= 4 + 1
        results.close()  # type: ignore[attr-defined]
        assert r.hget(JobKeys(job_id).meta, "state") == b"cancelled"


def test_a_huge_buffersize_works_as_an_unbounded_one(redis_url: str, node: WorkerProcess) -> None:
    """3.14 takes any positive int; past the longest window a stream job has
    (2^32 - 1 batches), a larger one changes nothing: it must not fail naming
    the stream's ``window``, which the caller never gave."""
    with Executor(redis_url) as executor:
        assert list(executor.map(tasks.square, [1, 2], buffersize=10**30)) == [1, 4]
        assert list(executor.map(tasks.square, [3], buffersize=2**32)) == [9]
