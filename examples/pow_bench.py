"""The seed article's benchmark: map a CPU-bound task over a process pool.

    python examples/stdlib/pow_bench.py max_workers chunk_size num_tasks num_calc

Each task does ``num_calc`` rounds of ``a = pow(a, a)`` from a random ``a`` in
[0, 1) (so it never overflows). ``examples/stdlib/pow_bench.py`` runs it on a
local ``ProcessPoolExecutor(max_workers)``; ``examples/pow_bench.py`` is the
same program on a taskfan cluster (TASKFAN_REDIS_URL), whose nodes decide their
own process counts: the two differ in one line, the import of the executor
(tests/test_examples.py checks it). Compare them from the repository root, with
worker nodes running, e.g.::

    docker compose up -d --scale worker=4 redis worker
    python examples/stdlib/pow_bench.py 4 100 100000 100
    TASKFAN_REDIS_URL=redis://localhost:6379/0 python examples/pow_bench.py 4 100 100000 100
"""

import random
import sys
import time
from producer import Executor as ProcessPoolExecutor

USAGE = "usage: pow_bench.py max_workers chunk_size num_tasks num_calc"


def task(params: tuple[float, int]) -> float:
    v, num_calc = params
    a = float(v)
    for _ in range(num_calc):
        a = pow(a, a)
    return a


def main(argv: list[str]) -> int:
    try:
        max_workers, chunk_size, num_tasks, num_calc = (int(a) for a in argv)
    except ValueError:
        print(USAGE, file=sys.stderr)
        return 2
    params = [(random.random(), num_calc) for _ in range(num_tasks)]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers) as executor:
        results = list(executor.map(task, params, chunksize=chunk_size))
    elapsed = time.perf_counter() - started
    print(f"{num_tasks} tasks of {num_calc} pow() rounds, chunksize {chunk_size}: {elapsed:.3f}s")
    print(f"checksum {sum(results):.6f} of {len(results)} results")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
