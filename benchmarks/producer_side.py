"""The producer's costs: ``submit`` latency, and the enqueue rate of a large map."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.measure import percentile
from benchmarks.runners import TIMEOUT, make_items
from benchmarks.tasks import task
from producer import Client, Job
from producer.ops.admin import purge
from taskfan.keys import JobKeys

Say = Callable[[str], None]
#: a queue no node serves: enqueued batches stay put until purged
IDLE_QUEUE = "taskfan-bench-enqueue"


def measure_submit(
    client: Client, calls: int, round_trips: int, repeats: int, say: Say
) -> dict[str, Any]:
    """Sequential ``Client.submit`` calls on the node's queue: the call alone
    (the node drains them meanwhile), then submit -> result round trips."""
    runs = []
    for _ in range(repeats):
        enqueue, jobs = [], []
        for i in range(calls):
            started = time.perf_counter()
            jobs.append(client.submit(task, (i / calls, 0)))
            enqueue.append(time.perf_counter() - started)
        _forget(client, jobs)
        round_trip = []
        for i in range(round_trips):
            started = time.perf_counter()
            job = client.submit(task, (i / round_trips, 0))
            next(iter(job.results(timeout=TIMEOUT)))
            round_trip.append(time.perf_counter() - started)
            jobs.append(job)
        _forget(client, jobs)
        run = {
            "enqueue_p50_ms": percentile(enqueue, 50) * 1000,
            "enqueue_p99_ms": percentile(enqueue, 99) * 1000,
            "round_trip_p50_ms": percentile(round_trip, 50) * 1000,
            "round_trip_p99_ms": percentile(round_trip, 99) * 1000,
        }
        say(", ".join(f"submit {k} {v:.3f}" for k, v in run.items()))
        runs.append(run)
    medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    return {"calls": calls, "round_trip_calls": round_trips, **medians, "runs": runs}


def measure_enqueue(client: Client, items: int, repeats: int, say: Say) -> dict[str, Any]:
    """``Client.map`` over a generator (length unknown: batches ramp up to their
    largest; making the items is timed too) and over a list (length known,
    made beforehand), on a queue no node serves; the queue is purged and the
    job deleted after each run (not timed)."""
    idle = Client(client.redis, IDLE_QUEUE)
    results: dict[str, Any] = {"items": items}
    for name, make in (("generator", _generator), ("list", _list)):
        seconds = []
        for _ in range(repeats):
            inputs = make(items)
            started = time.perf_counter()
            job = idle.map(task, inputs)
            seconds.append(time.perf_counter() - started)
            purge(client.redis, IDLE_QUEUE)
            client.redis.delete(*JobKeys(job.id).all())
            say(f"enqueue {items:,} items from a {name}: {seconds[-1]:.3f}s")
        median = statistics.median(seconds)
        results[name] = {"seconds": seconds, "median": median, "items_per_s": items / median}
    return results


def _generator(items: int) -> Iterator[tuple[float, int]]:
    """Distinct items (pickle would encode repeats of one object as references)."""
    return ((i / items, 0) for i in range(items))


def _list(items: int) -> list[tuple[float, int]]:
    return make_items(items, 0)


def _forget(client: Client, jobs: list[Job]) -> None:
    """Wait for the jobs (not timed), then delete their keys."""
    for job in jobs:
        job.wait(timeout=TIMEOUT)
    pipe = client.redis.pipeline(transaction=False)
    for job in jobs:
        pipe.delete(*JobKeys(job.id).all())
    pipe.execute()
    jobs.clear()
