"""``python -m benchmarks.many_nodes``: many one-process nodes on one Redis (issue 19).

Starts a redis-server of its own and ``--nodes`` nodes of one process each (32 by
default), warms every one, then maps a sleeping task (``benchmarks.sleepy:nap``,
so the CPU of this machine is not the limit) over ``--items`` items of
``--seconds`` each, at the automatic sizes and at fixed ones, alternating, and
prints each job's share of the ideal time ``items x seconds / nodes``. The first
automatic job runs on a function no node has measured (no published cost); the
later ones run with the cost the nodes published.

Around every job it reads what Redis spent (``benchmarks.redis_load``: CPU of
the server process and ``INFO commandstats``) and prints, per setting, Redis's
CPU per batch and per item and the commands that took it; then a probe of
no-op jobs (``--probe-items`` items at batch sizes ``--probe-sizes``) splits
Redis's CPU into a part per batch and a part per item. ``--cluster`` runs the
same on a local Redis Cluster of three primaries (``tests/scale/cluster.py``)
and shows each primary's share: the queue's stream lives on one of them.

    .venv/bin/python -m benchmarks.many_nodes                 # 32 nodes, 3,200 x 20 ms
    .venv/bin/python -m benchmarks.many_nodes --nodes 4 --items 200 --repeats 1
    .venv/bin/python -m benchmarks.many_nodes --cluster
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis

from benchmarks import redis_load
from benchmarks.processes import NodeProcess
from benchmarks.redis_load import Servers, Usage
from benchmarks.sleepy import nap
from producer import Client
from producer.sizing import plan
from taskfan import keys
from taskfan.keys import JobKeys, QueueKeys
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
    usage: Usage | None = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--items", type=int, default=3200)
    parser.add_argument("--seconds", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fixed", default=FIXED, help="BATCHxCHUNK,... (default %(default)s)")
    parser.add_argument(
        "--probe-items",
        type=int,
        default=32_000,
        help="no-op items per probe job (default %(default)s; 0: no probe)",
    )
    parser.add_argument(
        "--probe-sizes",
        default="10,1000",
        help="batch sizes of the probe's jobs (default %(default)s)",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=10.0,
        help="how long idle nodes are measured (default %(default)s)",
    )
    parser.add_argument("--cluster", action="store_true",
                        help="on a local Redis Cluster of three primaries")  # fmt: skip
    args = parser.parse_args(argv)
    ideal = args.items * args.seconds / args.nodes
    print(f"load {os.getloadavg()[0]:.1f}; {args.nodes} nodes x 1 process; "
          f"{args.items} items of {args.seconds * 1000:g} ms; ideal {ideal:.2f}s"
          f"{'; on a cluster of 3 primaries' if args.cluster else ''}")  # fmt: skip
    with _redis(args.cluster) as (url, servers):
        client = Client.from_url(url, QUEUE)
        nodes = [NodeProcess(url, QUEUE, processes=1) for _ in range(args.nodes)]
        try:
            _warm(client, nodes)
            items = [args.seconds] * args.items
            print(f"plan before the first job: {_plan(client, len(items))}")
            first = _time(client, items, None, None, servers)
            print(f"automatic, first job (no published cost): {first.seconds:.2f}s, "
                  f"{ideal / first.seconds:.0%} of ideal")  # fmt: skip
            settings = [Setting("automatic, cost published", None, None)]
            for fixed in filter(None, args.fixed.split(",")):
                batch, chunk = (int(n) for n in fixed.split("x"))
                settings.append(Setting(f"batch {batch} x chunk {chunk}", batch, chunk))
            for repeat in range(args.repeats):
                for s in settings if repeat % 2 == 0 else settings[::-1]:
                    used = _time(client, items, s.batch_size, s.chunksize, servers)
                    s.shares.append(ideal / used.seconds)
                    if s.usage is None:
                        s.usage = used
                    else:
                        s.usage.add(used)
                    print(f"  {s.label}: {used.seconds:.2f}s, {ideal / used.seconds:.0%} of ideal")
            print(f"plan after: {_plan(client, len(items))}")
            for s in settings:
                print(f"{s.label}: median {statistics.median(s.shares):.0%}, "
                      f"worst {min(s.shares):.0%} of ideal ({len(s.shares)} runs)")  # fmt: skip
            print(f"load {os.getloadavg()[0]:.1f}")
            _report(settings, servers, client, args)
            before = servers.take()
            time.sleep(args.idle_seconds)
            idle = servers.since(before, 0, 0, args.idle_seconds)
            calls = sum(idle.calls.values())
            print(f"\n{args.nodes} idle nodes for {args.idle_seconds:g}s: Redis CPU "
                  f"{1e6 * idle.cpu / args.idle_seconds / args.nodes:.0f} µs per second per "
                  f"node, {calls / args.idle_seconds / args.nodes:.2f} commands per second "
                  f"per node ({idle.commands()})")  # fmt: skip
        finally:
            for node in nodes:
                node.stop()
            client.redis.close()
            servers.close()


@contextlib.contextmanager
def _redis(cluster: bool) -> Iterator[tuple[str, Servers]]:
    """A Redis of our own (one server, or a local cluster): its URL and its servers."""
    if not cluster:
        with RedisServer() as server:
            yield server.url, Servers([redis.Redis.from_url(server.url)], ["Redis"])
        return
    from tests.scale.cluster import LocalCluster  # the tests' cluster, formed from Python

    with LocalCluster() as local:
        queue = local.owner(QueueKeys(QUEUE).stream)
        names = [f"primary {i}{' (the queue)' if i == queue else ''}"
                 for i in range(len(local.servers))]  # fmt: skip
        yield local.url, Servers([local.node(i) for i in range(len(local.servers))], names)


def _report(settings: list[Setting], servers: Servers, client: Client,
            args: argparse.Namespace) -> None:  # fmt: skip
    """What Redis spent per setting, and the probe's split per batch and per item."""
    print("\nwhat the jobs cost Redis (INFO cpu and commandstats around each job):")
    for s in settings:
        if s.usage is not None:
            print(f"- {s.label} ({s.usage.batches} batches, {s.usage.items} items): "
                  f"{s.usage.summary()}\n  per batch: {s.usage.commands()}")  # fmt: skip
    if args.probe_items <= 0:
        return
    sizes = [int(n) for n in args.probe_sizes.split(",") if n.strip()]

    def run_job(count: int, size: int) -> tuple[int, float]:
        used = _time(client, [0.0] * count, size, None, None)
        return used.batches, used.seconds

    split = redis_load.probe(servers, run_job, args.probe_items, sizes, max(1, args.repeats // 2))
    print(f"\nprobe: no-op jobs of {args.probe_items} items at batch sizes {sizes}:")
    for u in split.usages:
        print(f"- {u.batches} batches in {u.seconds:.2f}s: {u.summary()}")
    print(f"Redis CPU split (least squares): {split.per_batch * 1e6:.0f} µs per batch + "
          f"{split.per_item * 1e6:.2f} µs per item")  # fmt: skip
    print(f"per batch at batch size {sizes[0]}: {split.usages[0].commands()}")


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
    client.redis.delete(*JobKeys(job.id).all())
    # A node publishes the cost after recording (on a cluster a round trip after):
    # wait for it, then remove it.
    cost = keys.cost(reference(nap))
    while not client.redis.exists(cost) and time.monotonic() < deadline:
        time.sleep(0.05)
    client.redis.delete(cost)
    client._costs.forget(reference(nap))  # the cost read with the warm-up's results


def _plan(client: Client, total: int) -> str:
    """The automatic batch size the producer would choose now, and from what."""
    cost, capacity = client._costs.read(QUEUE, reference(nap))
    return f"{plan(total, cost, capacity)} from cost {cost} and {capacity}"


def _time(client: Client, items: list[float], batch: int | None, chunk: int | None,
          servers: Servers | None) -> Usage:  # fmt: skip
    """One job, timed; with ``servers``, what it cost them (deleting its keys not counted)."""
    before = servers.take() if servers is not None else None
    started = time.perf_counter()
    job = client.map(nap, items, batch_size=batch, chunksize=chunk)
    results = list(job.results(timeout=TIMEOUT))
    elapsed = time.perf_counter() - started
    used = (
        servers.since(before, 0, len(items), elapsed)
        if servers is not None and before is not None
        else Usage([], [], 0, len(items), elapsed)
    )
    used.batches = job.meta().batches
    assert results == items
    client.redis.delete(*JobKeys(job.id).all())
    return used


if __name__ == "__main__":
    main()
