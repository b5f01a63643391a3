"""``python -m benchmarks.redis_cost``: what a job costs Redis, per item and per batch.

For each setting it starts a redis-server of its own and one node (2 processes),
warms the node up, then maps a quick task over the items with the default sizes
(or a given batch size) and reads every result back, in input order, as a
producer does. Around the job it reads ``INFO commandstats`` (calls per
command), ``INFO stats`` (bytes in and out) and ``INFO cpu`` (the server's CPU
seconds), and prints per batch and per item figures; then what an idle node
costs per second, and ``redis-benchmark``'s figures on this machine for scale.
docs/scaling.md quotes a run.

    .venv/bin/python -m benchmarks.redis_cost            # the settings of docs/scaling.md
    .venv/bin/python -m benchmarks.redis_cost --quick    # small, to check the code
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from benchmarks.processes import NodeProcess
from benchmarks.tasks import task
from producer import Client
from taskfan.server import RedisServer

#: (items, batch_size or None for the default)
SETTINGS = [(10_000, None), (100_000, None), (10_000, 10)]
QUICK = [(500, None), (500, 10)]
IDLE_SECONDS = 20.0


@dataclass(frozen=True)
class Snapshot:
    calls: Counter[str]
    bytes_in: int
    bytes_out: int
    cpu: float
    at: float

    @classmethod
    def take(cls, r: redis.Redis) -> Snapshot:
        stats: Any = r.info("commandstats")
        calls = Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})
        net: Any = r.info("stats")
        cpu: Any = r.info("cpu")
        seconds = float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])
        return cls(calls, int(net["total_net_input_bytes"]), int(net["total_net_output_bytes"]),
                   seconds, time.monotonic())  # fmt: skip

    def __sub__(self, before: Snapshot) -> Snapshot:
        calls = self.calls - before.calls
        calls.pop("info", None)  # our own snapshots
        return Snapshot(calls, self.bytes_in - before.bytes_in, self.bytes_out - before.bytes_out,
                        self.cpu - before.cpu, self.at - before.at)  # fmt: skip


@dataclass(frozen=True)
class Cost:
    items: int
    batch_size: int
    batches: int
    used: Snapshot

    @property
    def commands(self) -> int:
        return sum(self.used.calls.values())


@contextlib.contextmanager
def warm_node(queue: str) -> Iterator[tuple[redis.Redis, Client]]:
    """A redis-server of its own with one warmed-up node on ``queue``: a plain
    client of the server (for INFO), and a producer on the queue."""
    with RedisServer() as server:
        r = redis.Redis.from_url(server.url)
        node = NodeProcess(server.url, queue)
        try:
            client = Client.from_url(server.url, queue)
            node.wait_ready(client)
            yield r, client
        finally:
            node.stop()
            r.close()


def measure(items: int, batch_size: int | None) -> Cost:
    with warm_node("cost") as (r, client):
        inputs = [(i / items, 10) for i in range(items)]
        before = Snapshot.take(r)
        job = client.map(task, inputs, batch_size=batch_size)
        results = list(job.results(timeout=600))
        used = Snapshot.take(r) - before
        assert len(results) == items
        meta = job.meta()
        return Cost(items, meta.batch_size, meta.batches, used)


def idle(seconds: float) -> Snapshot:
    """What one idle node (blocked reads, reclaim checks, heartbeats) costs."""
    with warm_node("idle") as (r, _):
        before = Snapshot.take(r)
        time.sleep(seconds)
        return Snapshot.take(r) - before


def redis_benchmark() -> str:
    """redis-benchmark's requests per second on this machine (PING, SET, XADD), if installed."""
    if shutil.which("redis-benchmark") is None:
        return "(redis-benchmark is not installed)"
    lines = []
    with RedisServer() as server:
        xadd = ["XADD", "bench", "MAXLEN", "~", "1000", "*", "f", "v"]
        for name, command in (("ping", ["-t", "ping"]), ("set", ["-t", "set"]), ("xadd", xadd)):
            done = subprocess.run(
                ["redis-benchmark", "-p", str(server.port), "-n", "100000", "-c", "50", "-q",
                 *command], capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
            lines.append(f"- {name}: {last.split(':', 1)[-1].strip()}")
    return "\n".join(lines)


def table(costs: list[Cost]) -> str:
    head = ("| items | batch size | batches | commands per batch | commands per item "
            "| bytes in per item | bytes out per item | Redis CPU per batch |")  # fmt: skip
    rows = [head, "|" + " --- |" * 8]
    for c in costs:
        rows.append(
            f"| {c.items:,} | {c.batch_size} | {c.batches} | {c.commands / c.batches:.1f} "
            f"| {c.commands / c.items:.3f} | {c.used.bytes_in / c.items:.1f} "
            f"| {c.used.bytes_out / c.items:.1f} | {1e6 * c.used.cpu / c.batches:.0f} µs |"
        )
    return "\n".join(rows)


def by_command(cost: Cost) -> str:
    calls = sorted(cost.used.calls.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {n / cost.batches:.2f}" for name, n in calls)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis_cost")
    parser.add_argument("--quick", action="store_true", help="small jobs, to check the code")
    args = parser.parse_args(argv)
    costs = [measure(items, size) for items, size in (QUICK if args.quick else SETTINGS)]
    print(table(costs))
    print("\ncommands Redis ran per batch (those record.lua runs included), by command:")
    for cost in costs:
        print(f"- {cost.items:,} items, batch size {cost.batch_size}: {by_command(cost)}")
    quiet = idle(2.0 if args.quick else IDLE_SECONDS)
    per_s = sum(quiet.calls.values()) / quiet.at
    print(f"\none idle node: {per_s:.2f} commands/s "
          f"({', '.join(f'{k} {v / quiet.at:.2f}' for k, v in quiet.calls.most_common())}), "
          f"{quiet.bytes_in / quiet.at:.0f} bytes/s in")  # fmt: skip
    if not args.quick:
        print("\nredis-benchmark, 50 clients, on this machine:\n" + redis_benchmark())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
