"""``python -m benchmarks.batch_cost``: CPU per batch of a node, and per call of a producer.

CPU time, not wall time: read from ``/proc/PID/stat`` (the node's process, all
its threads, not its pool processes) and ``time.process_time()`` (the producer),
so a loaded machine slows it down less than the suite's timings (issue 18, item
5). Two loads on one warm node of 2 processes:

- ``round trips``: ``N`` sequential ``Executor.submit(noop, i).result()``, each a
  batch of one call: the node's cost per batch, and the producer's per call;
- ``burst``: ``10 x N`` submits at once, coalesced into few batches: the node's
  cost per call when batches are large.

Run it from the repository root::

    .venv/bin/python -m benchmarks.batch_cost --calls 2000
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import time
from pathlib import Path

from benchmarks.processes import NodeProcess
from benchmarks.tasks import noop
from producer import Client, Executor
from taskfan.server import RedisServer

QUEUE = "taskfan-batch-cost"


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(calls: int) -> dict[str, float]:
    with RedisServer() as server:
        client = Client.from_url(server.url, QUEUE)
        node = NodeProcess(server.url, QUEUE, processes=2)
        try:
            node.wait_ready(client)
            with Executor(server.url, QUEUE) as executor:
                for i in range(50):  # warm: the function imported, its cost published
                    executor.submit(noop, i).result()
                batches, node_cpu, mine = (
                    executor._batch_count,
                    cpu_seconds(node.pid),
                    time.process_time(),
                )
                for i in range(calls):
                    executor.submit(noop, i).result()
                node_cpu = cpu_seconds(node.pid) - node_cpu
                mine = time.process_time() - mine
                trips = executor._batch_count - batches
                before, burst_cpu = executor._batch_count, cpu_seconds(node.pid)
                futures = [executor.submit(noop, i) for i in range(10 * calls)]
                concurrent.futures.wait(futures)
                burst_cpu = cpu_seconds(node.pid) - burst_cpu
                burst_batches = executor._batch_count - before
        finally:
            node.stop()
            client.redis.close()
    return {
        "round_trip_batches": trips,
        "node_cpu_ms_per_batch": node_cpu / trips * 1000,
        "producer_cpu_ms_per_round_trip": mine / calls * 1000,
        "burst_calls": 10 * calls,
        "burst_batches": burst_batches,
        "node_cpu_us_per_call_in_burst": burst_cpu / (10 * calls) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="round trips (default 2000)")
    args = parser.parse_args()
    for key, value in measure(args.calls).items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
