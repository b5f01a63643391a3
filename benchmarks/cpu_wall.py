"""``python -m benchmarks.cpu_wall``: is a slow run slow from its own work, or from waiting?

Runs scenario (b) on the local pool (chunksize 1,000) and on one warm taskfan
node (automatic sizes), alternating, and prints each run's wall time beside the
CPU time it used: for the local pool, this process and its reaped children
(the pool processes); for taskfan, this process (the producer), the node and
its pool processes, and redis-server (``/proc/PID/stat``, Linux only). When the
CPU stays put while the wall time moves, the slow runs waited for a CPU
(docs/performance.md, "Variance").
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.processes import NodeProcess, _descendants
from benchmarks.runners import make_items, time_local, time_taskfan
from producer import Client
from taskfan.server import RedisServer

QUEUE = "taskfan-bench-cpu-wall"


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of ``pids``, in seconds (a process that ended counts 0)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_wall")
    parser.add_argument("--repeats", type=int, default=8)
    repeats = parser.parse_args(argv).repeats
    items = make_items(10_000, 1_000)
    with RedisServer() as server:
        client = Client.from_url(server.url, QUEUE)
        node = NodeProcess(server.url, QUEUE, processes=2)
        try:
            node.wait_ready(client)
            assert server.pid is not None
            others = [node.pid, *_descendants(node.pid), server.pid]
            print("| runner | wall s | CPU s | CPU / wall | load |")
            print("| --- | ---: | ---: | ---: | ---: |")
            for _ in range(repeats):
                for kind in ("local, chunksize 1,000", "taskfan, automatic sizes"):
                    load = os.getloadavg()[0]
                    before = own_cpu() + cpu_seconds(others)
                    if kind.startswith("local"):
                        wall, _ = time_local(items, 1000)
                    else:
                        wall, _ = time_taskfan(client, items, (None, None))
                    cpu = own_cpu() + cpu_seconds(others) - before
                    print(f"| {kind} | {wall:.3f} | {cpu:.3f} | {cpu / wall:.2f} | {load:.1f} |")
        finally:
            node.stop()
            client.redis.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
