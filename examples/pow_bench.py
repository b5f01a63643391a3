"""The seed article's benchmark: map a CPU-bound task, locally and on the cluster.

    python examples/pow_bench.py max_workers chunk_size num_tasks num_calc

Each task does ``num_calc`` rounds of ``a = pow(a, a)`` from a random ``a`` in
[0, 1) (so it never overflows). The same ``map(task, params,
chunksize=chunk_size)`` runs on a local ``ProcessPoolExecutor(max_workers)``
and on the taskfan ``Executor`` (TASKFAN_REDIS_URL, default
redis://localhost:6379/0), whose nodes decide their own process counts. Run it
from the repository root, with worker nodes running, e.g.::

    docker compose up -d --scale worker=4 redis worker
    python examples/pow_bench.py 4 100 100000 100
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor as BaseExecutor
from concurrent.futures import ProcessPoolExecutor

from producer import Executor

REDIS_URL = os.environ.get("TASKFAN_REDIS_URL", "redis://localhost:6379/0")
USAGE = "usage: python examples/pow_bench.py max_workers chunk_size num_tasks num_calc"


def task(params: tuple[float, int]) -> float:
    v, num_calc = params
    a = float(v)
    for _ in range(num_calc):
        a = pow(a, a)
    return a


def timed(
    make: Callable[[], BaseExecutor], params: Sequence[tuple[float, int]], chunk_size: int
) -> tuple[float, list[float]]:
    started = time.perf_counter()
    with make() as executor:
        results = list(executor.map(task, params, chunksize=chunk_size))
    return time.perf_counter() - started, results


def main(argv: Sequence[str]) -> int:
    try:
        max_workers, chunk_size, num_tasks, num_calc = (int(a) for a in argv)
    except ValueError:
        print(USAGE, file=sys.stderr)
        return 2
    params = [(random.random(), num_calc) for _ in range(num_tasks)]
    print(f"{num_tasks} tasks of {num_calc} pow() rounds, chunksize {chunk_size}")
    local, expected = timed(lambda: ProcessPoolExecutor(max_workers), params, chunk_size)
    print(f"ProcessPoolExecutor({max_workers}): {local:8.3f}s")
    remote, results = timed(
        lambda: Executor(REDIS_URL, max_workers=max_workers), params, chunk_size
    )
    print(f"taskfan Executor:        {remote:8.3f}s  ({REDIS_URL})")
    if results != expected:
        print("the results differ!", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
