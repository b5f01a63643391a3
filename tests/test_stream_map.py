"""``Client.map(..., stream=True)``: an endless map streams, with back-pressure,
in flat memory, and closing its iterator cancels the rest (issue 17 item 4)."""

from __future__ import annotations

import gc
import itertools
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client
from producer.stream import StreamJob
from taskfan import scripts
from taskfan.errors import ConfigError
from taskfan.keys import JobKeys, QueueKeys
from tests import tasks
from tests.helpers import Counting
from tests.workers import WorkerProcess

DEADLINE = 10.0


def wait_for(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def resident(pid: int) -> int:
    """A process's resident memory in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def stream_job(client: Client, items: Any, **options: Any) -> StreamJob:
    job = client.map(tasks.square, items, stream=True, **options)
    assert isinstance(job, StreamJob)
    return job


def test_a_map_over_count_yields_at_once_and_closing_cancels_it(
    redis_url: str, node: WorkerProcess, r: redis.Redis
) -> None:
    client = Client.from_url(redis_url)
    started = time.monotonic()
    job = stream_job(client, itertools.count())  # returns at once: the input is endless
    results = job.results(timeout=DEADLINE)
    assert next(results) == 0
    assert time.monotonic() - started < DEADLINE
    assert [next(results) for _ in range(99)] == [n * n for n in range(1, 100)]
    assert job.status in ("enqueuing", "running", "queued")
    results.close()
    assert job.status == "cancelled"
    job.thread.join(DEADLINE)
    assert not job.thread.is_alive()


def test_breaking_out_and_dropping_the_iterator_cancels_the_job(
    redis_url: str, node: WorkerProcess
) -> None:
    client = Client.from_url(redis_url)
    job = stream_job(client, itertools.count(), window=2)
    for value in job.results(timeout=DEADLINE):
        if value >= 25:
            break  # the loop's iterator is garbage now
    gc.collect()
    assert job.status == "cancelled"
    job.thread.join(DEADLINE)
    assert not job.thread.is_alive()


def test_a_dropped_handle_cancels_its_job_and_stops_its_thread(redis_url: str) -> None:
    client = Client.from_url(redis_url)
    job = stream_job(client, itertools.count(), batch_size=1, window=2)
    thread, job_id = job.thread, job.id
    del job
    gc.collect()
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert client.job(job_id).status == "cancelled"


def test_the_producer_waits_for_the_reader(redis_url: str, r: redis.Redis) -> None:
    """No node, no reader: the enqueuer sends its window and waits."""
    client = Client.from_url(redis_url)
    counting = Counting()
    job = stream_job(client, counting, batch_size=1, window=3)
    queue = QueueKeys("default")
    wait_for(lambda: r.xlen(queue.stream) == 3, "the window's three batches")
    time.sleep(0.5)  # an observation window, not synchronisation: nothing more is sent
    assert r.xlen(queue.stream) == 3
    assert counting.taken <= 4  # the three sent, and the one waiting for room
    assert job.status != "cancelled"
    job.cancel()
    job.thread.join(DEADLINE)
    assert not job.thread.is_alive()  # a cancelled job stops its producer, read or not


def test_never_more_than_the_window_ahead_of_the_reader(
    redis_url: str, node: WorkerProcess
) -> None:
    client = Client.from_url(redis_url)
    counting = Counting()
    batch, window = 5, 3
    job = stream_job(client, counting, batch_size=batch, window=window)
    results = job.results(timeout=60)
    for index, value in enumerate(itertools.islice(results, 300)):
        assert value == index * index
        counting.consumed = index + 1
    results.close()
    # the window's batches, the one waiting for room, and the one being read
    assert counting.worst <= (window + 2) * batch


def test_an_endless_map_runs_in_flat_memory(
    redis_url: str, node: WorkerProcess, r: redis.Redis
) -> None:
    client = Client.from_url(redis_url)
    window = 4
    job = stream_job(client, itertools.count(), batch_size=50, window=window)
    keys, queue = JobKeys(job.id), QueueKeys("default")
    results = job.results(timeout=120)
    consumed = 0
    samples: list[tuple[int, int]] = []
    rss: list[int] = []  #: the node's resident memory
    tracemalloc.start()
    try:
        for upto in (2_000, 12_000):
            for value in itertools.islice(results, upto - consumed):
                assert value == consumed * consumed
                consumed += 1
            gc.collect()  # cyclic garbage is not memory held
            samples.append((r.info("memory")["used_memory"], tracemalloc.get_traced_memory()[1]))
            tracemalloc.reset_peak()  # the next sample's peak is over the next stretch
            rss.append(resident(node.pid))
            # what Redis holds for the job: about the window, however much was read
            assert r.hlen(keys.results) <= window + 1
            assert r.xlen(keys.events) <= (window + 16) + window + 1
            assert r.xlen(queue.stream) <= window + 1
    finally:
        tracemalloc.stop()
        results.close()
    (redis_before, peak_before), (redis_after, peak_after) = samples
    # 10,000 more items read: Redis and this process hold about what they did
    assert redis_after - redis_before < 256 * 1024, samples
    assert peak_after - peak_before < 256 * 1024, samples
    assert rss[1] - rss[0] < 8 * 1024 * 1024, rss  # allocator noise, not 10,000 items


def test_an_input_that_fails_raises_after_the_values_before_it(
    redis_url: str, node: WorkerProcess
) -> None:
    def items() -> Iterator[int]:
        yield from range(5)
        raise OSError("the input broke")

    client = Client.from_url(redis_url)
    job = stream_job(client, items(), batch_size=1)
    got: list[int] = []
    with pytest.raises(OSError, match="the input broke"):
        for value in job.results(timeout=DEADLINE):
            got.append(value)
    assert got == [0, 1, 4, 9, 16]
    assert job.status == "finished"  # sealed with the items read before the error


def test_a_finite_stream_finishes_like_any_job(redis_url: str, node: WorkerProcess) -> None:
    client = Client.from_url(redis_url)
    job = stream_job(client, range(500), window=2)
    assert list(job.results(timeout=60)) == [n * n for n in range(500)]
    assert job.wait(DEADLINE)
    assert job.status == "finished"
    job.thread.join(DEADLINE)
    assert not job.thread.is_alive()


def test_a_batch_redelivered_after_its_result_was_freed_counts_once(r: redis.Redis) -> None:
    client = Client(r)
    job = stream_job(client, range(3), batch_size=1, window=8)
    job.thread.join(DEADLINE)
    keys = JobKeys(job.id)
    assert scripts.record_batch(r, keys, 0, b"x", 1, 0, time.time()) == scripts.RECORDED
    assert scripts.release_results(r, keys, 1, 20, ["0"]) == 1
    assert not r.hexists(keys.results, "0")
    assert scripts.record_batch(r, keys, 0, b"x", 1, 0, time.time()) == (scripts.ALREADY_RECORDED)
    assert r.hget(keys.meta, "batches_done") == b"1"
    assert scripts.record_batch(r, keys, 1, b"y", 1, 0, time.time()) == scripts.RECORDED


def test_window_is_bounded(redis_url: str) -> None:
    client = Client.from_url(redis_url)
    with pytest.raises(Exception, match="window"):
        client.map(tasks.square, range(3), stream=True, window=0)


def test_the_thread_is_a_daemon() -> None:
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("taskfan-stream"))


def test_as_completed_is_refused_with_the_fix(redis_url: str) -> None:
    client = Client.from_url(redis_url)
    job = stream_job(client, range(3))
    with pytest.raises(ConfigError, match=r"results\(\) or outcomes\(\)"):
        job.as_completed()
    job.cancel()
