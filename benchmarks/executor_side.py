"""``Executor.submit`` against ``ProcessPoolExecutor(2)``, side by side (issue 18, item 2).

Two settings, each run ``repeats`` times with the local pool and taskfan
alternating inside every repeat (a machine whose load drifts spreads the drift
over both):

- **burst**: ``calls`` ``submit(noop, i)`` calls from one thread, as fast as it
  can make them, timed from the first ``submit`` to the last result
  (``concurrent.futures.wait``). Goal: taskfan within 1.5x of the local pool.
- **roundtrip**: ``round_trips`` sequential ``submit(noop, i).result()`` calls;
  the p50 and p99 of one call. Goal: taskfan's p50 at most 0.5 ms on loopback.

Both executors are warm: the local pool's processes are started, the node is
ready and has run the function, and each executor has a submit behind it.
"""

from __future__ import annotations

import concurrent.futures
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks.measure import percentile
from benchmarks.tasks import noop
from producer import Executor

Say = Callable[[str], None]
#: the goals: burst time over the local pool's, and the round trip's p50 in ms
BURST_RATIO = 1.5
ROUND_TRIP_P50_MS = 0.5


def measure_executor(
    redis_url: str, queue: str, calls: int, round_trips: int, repeats: int, say: Say
) -> dict[str, Any]:
    bursts: dict[str, list[float]] = {"local": [], "taskfan": []}
    trips: dict[str, list[dict[str, float]]] = {"local": [], "taskfan": []}
    with (
        concurrent.futures.ProcessPoolExecutor(2) as local,
        Executor(redis_url, queue) as remote,
    ):
        executors: dict[str, concurrent.futures.Executor] = {"local": local, "taskfan": remote}
        for executor in executors.values():  # warm: processes up, the function imported
            list(executor.map(noop, range(8)))
            executor.submit(noop, 0).result()
        for repeat in range(repeats):
            order = list(executors) if repeat % 2 == 0 else list(executors)[::-1]
            for name in order:
                seconds = burst(executors[name], calls)
                bursts[name].append(seconds)
                say(f"burst of {calls:,} submits, {name}: {seconds:.3f}s")
            for name in order:
                run = round_trip(executors[name], round_trips)
                trips[name].append(run)
                say(f"round trip, {name}: p50 {run['p50_ms']:.3f} ms, p99 {run['p99_ms']:.3f} ms")
    ratios = [t / loc for t, loc in zip(bursts["taskfan"], bursts["local"], strict=True)]
    return {
        "calls": calls,
        "round_trip_calls": round_trips,
        "burst": {
            name: {"seconds": s, "median": statistics.median(s), "worst": max(s)}
            for name, s in bursts.items()
        }
        | {"ratio": {"runs": ratios, "median": statistics.median(ratios), "worst": max(ratios)}},
        "round_trip": {
            name: {
                "runs": runs,
                "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                "worst_p50_ms": max(r["p50_ms"] for r in runs),
                "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            }
            for name, runs in trips.items()
        },
    }


def burst(executor: concurrent.futures.Executor, calls: int) -> float:
    """Seconds from the first of ``calls`` submits to the last result."""
    started = time.perf_counter()
    futures = [executor.submit(noop, i) for i in range(calls)]
    _, not_done = concurrent.futures.wait(futures)
    seconds = time.perf_counter() - started
    if not_done or any(f.result() != i for i, f in enumerate(futures)):
        raise RuntimeError("a burst's results are wrong")
    return seconds


def round_trip(executor: concurrent.futures.Executor, calls: int) -> dict[str, float]:
    """p50 and p99, in ms, of ``submit(...).result()`` made one after another."""
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        if executor.submit(noop, i).result() != i:
            raise RuntimeError("a round trip's result is wrong")
        samples.append(time.perf_counter() - started)
    return {"p50_ms": percentile(samples, 50) * 1000, "p99_ms": percentile(samples, 99) * 1000}
