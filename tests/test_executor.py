"""``producer.Executor`` behaves like ``ProcessPoolExecutor``, on a cluster."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any

import pytest

from producer import Executor
from taskfan.keys import QueueKeys
from tests import tasks
from tests.workers import WorkerProcess


def outcomes_of(iterator: Iterator[object]) -> list[object]:
    """Values until the first exception, then (type, args) of that exception."""
    out: list[object] = []
    try:
        for value in iterator:
            out.append(value)
    except Exception as exc:
        out.append((type(exc), exc.args))
    return out


@pytest.mark.cluster
def test_map_matches_process_pool_exactly(redis_url: str, node: WorkerProcess) -> None:
    inputs = list(range(1, 30))
    with concurrent.futures.ProcessPoolExecutor(2) as local:
        # chunksize=1: with larger chunks the stdlib also drops the values that
        # precede a failing item in its chunk; taskfan yields them (see README).
        expected = outcomes_of(local.map(tasks.fail_if_multiple_of_7, inputs, chunksize=1))
        expected_ok = list(local.map(tasks.add, inputs, inputs, chunksize=4))
    with Executor(redis_url) as executor:
        got = outcomes_of(executor.map(tasks.fail_if_multiple_of_7, inputs, chunksize=4))
        got_ok = list(executor.map(tasks.add, inputs, inputs))
    assert got == expected
    assert expected[-1][0] is ValueError  # type: ignore[index]
    assert got_ok == expected_ok


def test_exceptions_keep_the_remote_traceback(redis_url: str, node: WorkerProcess) -> None:
    with Executor(redis_url) as executor:
        future = executor.submit(tasks.fail, 3)
        with pytest.raises(ValueError, match="bad 3") as info:
            future.result(timeout=60)
    assert "in fail" in str(info.value.__cause__)


@pytest.mark.cluster
def test_submit_futures_work_with_wait_and_as_completed(
    redis_url: str, node: WorkerProcess
) -> None:
    with Executor(redis_url, max_workers=4) as executor:
        futures = [executor.submit(tasks.add, i, b=i) for i in range(20)]
        done, not_done = concurrent.futures.wait(futures, timeout=60)
        assert not not_done and len(done) == 20
        assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == [
            2 * i for i in range(20)
        ]
        assert executor.submit(pow, 323, 1235).result(timeout=60) == pow(323, 1235)


def test_map_timeout_counts_from_the_call(redis_url: str, node: WorkerProcess) -> None:
    with Executor(redis_url) as executor:
        results = executor.map(tasks.sleep, [5.0], timeout=0.2)
        with pytest.raises(concurrent.futures.TimeoutError):
            next(results)


def test_map_is_lazy_and_ordered(redis_url: str, node: WorkerProcess) -> None:
    with Executor(redis_url) as executor:
        results = executor.map(tasks.square, range(1000), chunksize=50)
        assert next(results) == 0
        assert list(results) == [x * x for x in range(1, 1000)]


def test_shutdown_refuses_new_work_and_cancels_pending(redis_url: str) -> None:
    executor = Executor(redis_url)  # no node running: futures stay pending
    futures = [executor.submit(tasks.square, i) for i in range(3)]
    executor.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in futures)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(tasks.square, 1)
    with pytest.raises(ValueError, match="chunksize"):
        Executor(redis_url).map(tasks.square, [1], chunksize=0)


def test_dropping_a_map_iterator_cancels_the_rest(redis_url: str, node: WorkerProcess) -> None:
    with Executor(redis_url) as executor:
        results = executor.map(tasks.sleep, [0.05] * 100)
        assert next(results) == 0.05
        results.close()  # type: ignore[attr-defined]  # as a loop's break + collection does
    client = executor.client
    job_ids: Any = client.redis.zrange(QueueKeys("default").jobs, 0, -1)
    (job,) = [client.job(j.decode()) for j in job_ids]
    assert job.meta().fn_ref.endswith(":sleep")
    assert job.status == "cancelled"
    assert job.progress().done < 100
