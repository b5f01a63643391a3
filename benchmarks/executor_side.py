"""``Executor.submit`` against ``ProcessPoolExecutor(2)``, side by side (issue 18, item 2).

Two settings, each run ``repeats`` times with the local pool and taskfan
alternating inside every repeat (a machine whose load drifts spreads the drift
over both):

- **burst**: ``calls`` ``submit(noop, i)`` calls from one thread, as fast as it
  can make them, timed from the first ``submit`` to the last result
  (``concurrent.futures.wait``). Goal: taskfan within 1.5x of the local pool.
- **roundtrip**: ``round_trips`` sequential ``submit(noop, i).result()`` calls;
  the p50 and p99 of one call. Goal: taskfan's p50 at most 0.5 ms on loopback.
- **floor**: what any round trip through Redis and a process pool takes at
  least here: a Redis ping-pong between two processes (an ``XADD``, an echo
  process woken in ``XREAD BLOCK`` adds the entry to a reply stream, the caller
  wakes in its own ``XREAD BLOCK``: no pool, no taskfan), plus the local pool's
  round trip. A taskfan call needs both, and then its own work.

Both executors are warm: the local pool's processes are started, the node is
ready and has run the function, and each executor has a submit behind it.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import statistics
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

import redis

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
    pings: list[dict[str, float]] = []
    with (
        concurrent.futures.ProcessPoolExecutor(2) as local,
        Executor(redis_url, queue) as remote,
        PingPong(redis_url) as ping_pong,
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
            pings.append(ping_pong.run(round_trips))
            say(f"Redis ping-pong: p50 {pings[-1]['p50_ms']:.3f} ms")
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
        "floor": floor(pings, trips["local"]),
    }


def floor(pings: list[dict[str, float]], local: list[dict[str, float]]) -> dict[str, Any]:
    """The floor of a round trip through Redis and a process pool: the medians
    of the ping-pong's and of the local pool's p50s, and their sum."""
    redis_ms = statistics.median(r["p50_ms"] for r in pings)
    pool_ms = statistics.median(r["p50_ms"] for r in local)
    return {"runs": pings, "redis_p50_ms": redis_ms, "pool_p50_ms": pool_ms,
            "p50_ms": redis_ms + pool_ms}  # fmt: skip


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


class PingPong:
    """An echo process on the suite's Redis: ``run`` times ``XADD`` there and
    the echo's answer back, nothing else (the Redis part of the floor)."""

    def __init__(self, redis_url: str) -> None:
        self.redis = redis.Redis.from_url(redis_url)
        prefix = f"taskfan-bench:ping:{uuid.uuid4().hex}"
        self.calls, self.replies = f"{prefix}:calls", f"{prefix}:replies"
        self.process = multiprocessing.get_context().Process(
            target=_echo, args=(redis_url, self.calls, self.replies), daemon=True
        )
        self.last = b"0"

    def __enter__(self) -> PingPong:
        self.process.start()
        self.run(10)  # warm: the echo connected and answering
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.redis.xadd(self.calls, {"stop": 1})
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
        self.redis.delete(self.calls, self.replies)
        self.redis.close()

    def run(self, calls: int) -> dict[str, float]:
        """p50 and p99, in ms, of ``calls`` ping-pongs made one after another."""
        samples = []
        for i in range(calls):
            started = time.perf_counter()
            self.redis.xadd(self.calls, {"i": i})
            reply: Any = self.redis.xread({self.replies: self.last}, count=1, block=0)
            samples.append(time.perf_counter() - started)
            ((_, [(self.last, fields)]),) = reply
            if fields != {b"i": str(i).encode()}:
                raise RuntimeError("a ping-pong's answer is wrong")
        return {"p50_ms": percentile(samples, 50) * 1000, "p99_ms": percentile(samples, 99) * 1000}


def _echo(redis_url: str, calls: str, replies: str) -> None:
    """The far side of a ping-pong: each entry of ``calls`` is added to
    ``replies``, until an entry says stop."""
    r = redis.Redis.from_url(redis_url)
    last: Any = b"0"
    while True:
        reply: Any = r.xread({calls: last}, count=16, block=0)
        for _, entries in reply:
            for entry_id, fields in entries:
                if b"stop" in fields:
                    return
                r.xadd(replies, fields)
                last = entry_id
