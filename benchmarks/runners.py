"""One timed map of the task over a list of items: local pool, taskfan (RQ: rq_side).

Every runner returns the seconds taken and the results in input order, which
the caller checks against the local pool's.
"""

from __future__ import annotations

import gc
import random
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from benchmarks.config import Setting
from benchmarks.tasks import task
from producer import Client
from taskfan.keys import JobKeys

Items = list[tuple[float, int]]
#: longest wait for one run's results
TIMEOUT = 600.0


def make_items(count: int, num_calc: int, seed: int = 5) -> Items:
    """``count`` task inputs ``(v, num_calc)``, v in [0, 1), the same for every runner."""
    rng = random.Random(seed)
    return [(rng.random(), num_calc) for _ in range(count)]


def settle_heap() -> None:
    """Leave what this process holds now (the inputs of every run, made once)
    out of its later garbage collections (``gc.freeze``). Its full collections
    walked them, 17-20 ms each (issue 18's interleaved run: a few per
    invocation), inside whichever run was timed then, local or taskfan: noise
    of the harness, not of either system."""
    gc.collect()
    gc.freeze()


def time_local(items: Items, chunksize: int, processes: int = 2) -> tuple[float, list[Any]]:
    """``ProcessPoolExecutor(processes).map``: pool start-up and shutdown included,
    as in the seed's table."""
    started = time.perf_counter()
    with ProcessPoolExecutor(processes) as pool:
        results = list(pool.map(task, items, chunksize=chunksize))
    return time.perf_counter() - started, results


def time_taskfan(client: Client, items: Items, setting: Setting) -> tuple[float, list[Any]]:
    """From the first enqueue to the last result read, on an already-running node.
    The job's keys are deleted afterwards (not timed)."""
    batch_size, chunksize = setting
    started = time.perf_counter()
    job = client.map(task, items, batch_size=batch_size, chunksize=chunksize)
    results = list(job.results(timeout=TIMEOUT))
    elapsed = time.perf_counter() - started
    client.redis.delete(*JobKeys(job.id).all())
    return elapsed, results
