"""``python -m benchmarks.interleaved``: (a), (b), (c) in turn on one function (issue 18).

The seed's three workloads are the same function, ``task((v, num_calc))``, at
costs per item of about 3.6 ms, 35 us and 0.2 us. Nodes size chunks, and
producers batches, from the cost measured on the function's earlier items, so
running the workloads in turn on one node (2 processes) makes every job meet a
cost measured on another: the order a, b, c, a, c, b puts each after each of
the two others. Every taskfan job uses the automatic sizes; the local
``ProcessPoolExecutor(2)`` runs beside it at its best chunksizes. Each taskfan
run's ratio is to the median of the best local chunksize of its workload;
the goal (issue 18 item 1) is every run within 1.10x and the median within 1.05x.

    .venv/bin/python -m benchmarks.interleaved              # 4 rounds of a, b, c, a, c, b
    .venv/bin/python -m benchmarks.interleaved --rounds 1 --quick
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections import defaultdict

from benchmarks.config import FULL, QUICK
from benchmarks.processes import NodeProcess
from benchmarks.runners import make_items, settle_heap, time_local, time_taskfan
from producer import Client
from taskfan.server import RedisServer

ORDER = ("a", "b", "c", "a", "c", "b")
#: the local chunksizes that can be best, per workload (the seed's table)
LOCAL = {"a": (1, 10), "b": (100, 1000), "c": (1000,)}
QUEUE = "taskfan-interleaved"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the code")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    items = {n: make_items(s.items, s.num_calc) for n, s in plan.scenarios.items()}
    settle_heap()
    local: dict[tuple[str, int], list[float]] = defaultdict(list)
    taskfan: dict[str, list[float]] = defaultdict(list)
    print(f"load {os.getloadavg()[0]:.1f} at the start")
    with RedisServer() as server:
        client = Client.from_url(server.url, QUEUE)
        node = NodeProcess(server.url, QUEUE, processes=2)
        try:
            node.wait_ready(client)
            for _ in range(args.rounds):
                for name in ORDER:
                    for chunksize in LOCAL[name] if not args.quick else (1,):
                        seconds, expected = time_local(items[name], chunksize)
                        local[name, chunksize].append(seconds)
                    seconds, results = time_taskfan(client, items[name], (None, None))
                    if results != expected:
                        raise RuntimeError(f"({name}): taskfan's results differ from the pool's")
                    taskfan[name].append(seconds)
                    print(f"({name}) taskfan auto {seconds:.3f}s")
        finally:
            node.stop()
            client.redis.close()
    print(f"load {os.getloadavg()[0]:.1f} at the end")
    print("| workload | best local (median) | taskfan auto median | ratio median | ratio worst "
          "| the best local's own worst run |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in sorted(taskfan):
        best, runs = min((statistics.median(v), v) for (n, _), v in local.items() if n == name)
        ratios = [s / best for s in taskfan[name]]
        # the same ratio for the local pool's own runs: the noise floor of the goal
        print(f"| ({name}) | {best:.3f}s | {statistics.median(taskfan[name]):.3f}s | "
              f"{statistics.median(ratios):.2f}x | {max(ratios):.2f}x | "
              f"{max(runs) / best:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
