"""``python -m benchmarks.many_nodes``: many one-process nodes on one Redis (issue 19).

Starts a redis-server of its own and ``--nodes`` nodes of one process each (32 by
default), warms every one, then maps a sleeping task (``benchmarks.sleepy:nap``,
so the CPU of this machine is not the limit) over ``--items`` items of
``--seconds`` each, at the automatic sizes and at fixed ones, alternating, and
prints each job's share of the ideal time ``items x seconds / nodes``. The first
automatic job runs on a function no node has measured (no published cost); the
later ones run with the cost the nodes published.

    .venv/bin/python -m benchmarks.many_nodes                 # 32 nodes, 3,200 x 20 ms
    .venv/bin/python -m benchmarks.many_nodes --nodes 4 --items 200 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field

from benchmarks.processes import NodeProcess
from benchmarks.sleepy import nap
from producer import Client
from producer.sizing import plan
from taskfan import keys
from taskfan.keys import JobKeys
from taskfan.refs import reference
from taskfan.server import RedisServer

QUEUE = "taskfan-many"
#: fixed (batch_size, chunksize) settings run beside the automatic sizes
FIXED = "25x1"
TIMEOUT = 600.0


@dataclass
class Setting:
    label: str
    batch_size: int | None
    chunksize: int | None
    shares: list[float] = field(default_factory=list)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--items", type=int, default=3200)
    parser.add_argument("--seconds", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fixed", default=FIXED, help="BATCHxCHUNK,... (default %(default)s)")
    args = parser.parse_args(argv)
    ideal = args.items * args.seconds / args.nodes
    print(f"load {os.getloadavg()[0]:.1f}; {args.nodes} nodes x 1 process; "
          f"{args.items} items of {args.seconds * 1000:g} ms; ideal {ideal:.2f}s")  # fmt: skip
    with RedisServer() as server:
        client = Client.from_url(server.url, QUEUE)
        nodes = [NodeProcess(server.url, QUEUE, processes=1) for _ in range(args.nodes)]
        try:
            _warm(client, nodes)
            items = [args.seconds] * args.items
            print(f"plan before the first job: {_plan(client, len(items))}")
            first = _time(client, items, None, None)
            print(f"automatic, first job (no published cost): {first:.2f}s, "
                  f"{ideal / first:.0%} of ideal")  # fmt: skip
            settings = [Setting("automatic, cost published", None, None)]
            for fixed in filter(None, args.fixed.split(",")):
                batch, chunk = (int(n) for n in fixed.split("x"))
                settings.append(Setting(f"batch {batch} x chunk {chunk}", batch, chunk))
            for repeat in range(args.repeats):
                for s in settings if repeat % 2 == 0 else settings[::-1]:
                    seconds = _time(client, items, s.batch_size, s.chunksize)
                    s.shares.append(ideal / seconds)
                    print(f"  {s.label}: {seconds:.2f}s, {ideal / seconds:.0%} of ideal")
            print(f"plan after: {_plan(client, len(items))}")
            for s in settings:
                print(f"{s.label}: median {statistics.median(s.shares):.0%}, "
                      f"worst {min(s.shares):.0%} of ideal ({len(s.shares)} runs)")  # fmt: skip
        finally:
            for node in nodes:
                node.stop()
            client.redis.close()


def _warm(client: Client, nodes: list[NodeProcess]) -> None:
    """Every node ran a job (its pool process started) and is registered; then the
    warm-up's published cost is removed, so the first timed job meets an unknown one."""
    for node in nodes:
        node.wait_ready(client)  # each warm-up job lands on some node; all are polled
    deadline = time.monotonic() + 60
    while client.redis.zcard(keys.NODES) < len(nodes):
        if time.monotonic() > deadline:
            raise RuntimeError("not every node registered within 60 s")
        time.sleep(0.2)
    # warm every node's pool: one item per node, each holding its node a while
    job = client.map(nap, [0.3] * len(nodes), batch_size=1, chunksize=1)
    list(job.results(timeout=TIMEOUT))
    client.redis.delete(*JobKeys(job.id).all(), keys.cost(reference(nap)))


def _plan(client: Client, total: int) -> str:
    """The automatic batch size the producer would choose now, and from what."""
    cost, capacity = client._costs.read(QUEUE, reference(nap))
    return f"{plan(total, cost, capacity)} from cost {cost} and {capacity}"


def _time(client: Client, items: list[float], batch: int | None, chunk: int | None) -> float:
    started = time.perf_counter()
    job = client.map(nap, items, batch_size=batch, chunksize=chunk)
    results = list(job.results(timeout=TIMEOUT))
    elapsed = time.perf_counter() - started
    assert results == items
    client.redis.delete(*JobKeys(job.id).all())
    return elapsed


if __name__ == "__main__":
    main()
