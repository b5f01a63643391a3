"""``python -m benchmarks --latency``: a job's time with round-trip delay to Redis.

One node (2 processes) reaches Redis through a ``DelayProxy``; the producer
reaches it directly ("node delayed") or through a proxy of its own with the
same delay ("node and producer delayed"). For each round trip (0, 1, 5, 20 and
40 ms by default) the proxies' delay is set, one untimed job lets the node's
connections settle, and then seed workloads (b) and (c) run at automatic sizes,
``repeats`` times each; the round trips alternate within each repeat. The goal
(issue 19): a job's median at round trip r is at most 1.10 x its median at 0 ms
plus 2 r.
"""

from __future__ import annotations

import datetime
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlparse

from benchmarks.config import AUTO, Options
from benchmarks.delay_proxy import DelayProxy
from benchmarks.processes import NodeProcess
from benchmarks.runners import Items, make_items, time_taskfan
from benchmarks.suite import _meta
from producer import Client
from taskfan.server import RedisServer

Say = Callable[[str], None]
QUEUE = "taskfan-latency"
RTTS_MS = (0, 1, 5, 20, 40)
SCENARIOS = ("b", "c")
MODES = {"node": "node delayed", "both": "node and producer delayed"}
#: the goal: median(r) <= SLOPE x median(0) + ROUND_TRIPS x r
SLOPE = 1.10
ROUND_TRIPS = 2


def run(options: Options, rtts_ms: Sequence[float], say: Say) -> dict[str, Any]:
    started = time.perf_counter()
    plan = options.plan
    items = {n: make_items(plan.scenarios[n].items, plan.scenarios[n].num_calc) for n in SCENARIOS}
    data: dict[str, Any] = {}
    with RedisServer() as server:
        target = urlparse(server.url)
        assert target.hostname and target.port
        data["meta"] = _meta(options, server.version, rq=False)
        data["meta"]["scenarios"] = list(SCENARIOS)
        with (
            DelayProxy(target.hostname, target.port) as node_proxy,
            DelayProxy(target.hostname, target.port) as producer_proxy,
        ):
            clients = {
                "node": Client.from_url(server.url, QUEUE),
                "both": Client.from_url(producer_proxy.url, QUEUE),
            }
            node = NodeProcess(node_proxy.url, QUEUE, processes=2)
            try:
                node.wait_ready(clients["node"])
                say(f"node pid {node.pid} ready behind {node_proxy.url}")
                proxies = [node_proxy, producer_proxy]
                rows = _measure(node, proxies, clients, items, rtts_ms, options.repeats, say)
            finally:
                node.stop()
                for client in clients.values():
                    client.redis.close()
    data["latency"] = _judge(rows)
    data["meta"]["load_average_after"] = os.getloadavg()
    data["meta"]["elapsed_seconds"] = time.perf_counter() - started
    return data


def _measure(
    node: NodeProcess,
    proxies: list[DelayProxy],
    clients: dict[str, Client],
    items: dict[str, Items],
    rtts_ms: Sequence[float],
    repeats: int,
    say: Say,
) -> list[dict[str, Any]]:
    """Every round trip, mode and scenario ``repeats`` times. The round trips
    alternate within each repeat (forwards, then backwards), so that a machine
    whose load drifts spreads the drift over all of them, not onto the last."""
    expected: dict[str, list[Any]] = {}
    times: dict[tuple[float, str, str], list[float]] = {}
    for repeat in range(repeats):
        for rtt_ms in rtts_ms if repeat % 2 == 0 else rtts_ms[::-1]:
            for proxy in proxies:
                proxy.rtt = rtt_ms / 1000
            time_taskfan(clients["node"], items["c"][:100], AUTO)  # untimed: the new delay settles
            for mode, client in clients.items():
                for name in SCENARIOS:
                    node.check_alive()
                    seconds, results = time_taskfan(client, items[name], AUTO)
                    if expected.setdefault(name, results) != results:
                        raise RuntimeError(f"({name}) at {rtt_ms} ms: the results differ")
                    times.setdefault((rtt_ms, mode, name), []).append(seconds)
                    say(f"rtt {rtt_ms:g} ms, {MODES[mode]}, ({name}): {seconds:.3f}s")
    return [_row(*key, seconds) for key, seconds in sorted(times.items())]


def _row(rtt_ms: float, mode: str, name: str, seconds: list[float]) -> dict[str, Any]:
    return {
        "rtt_ms": rtt_ms,
        "mode": mode,
        "scenario": name,
        "seconds": seconds,
        "median": statistics.median(seconds),
        "worst": max(seconds),
    }


def _judge(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row gains its 0 ms median's limit and the round trips it added."""
    base = {(row["mode"], row["scenario"]): row["median"] for row in rows if row["rtt_ms"] == 0}
    for row in rows:
        zero = base.get((row["mode"], row["scenario"]))
        rtt = row["rtt_ms"] / 1000
        if zero is None:
            continue
        row["limit"] = SLOPE * zero + ROUND_TRIPS * rtt
        row["met"] = row["median"] <= row["limit"]
        row["added_round_trips"] = (row["median"] - zero) / rtt if rtt else 0.0
    return rows


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    day = datetime.date.fromisoformat(meta["created"][:10])
    lines = [
        f"Measured {day}, commit {meta['commit']}, {meta['cpus']} CPUs, load average "
        f"{meta['load_average'][0]:.1f} before and {meta['load_average_after'][0]:.1f} after, "
        f"{meta['repeats']} repetitions; one node of 2 processes.",
        "",
        "| who is delayed | scenario | round trip | median | worst | round trips added | "
        f"goal ({SLOPE:.2f} x 0 ms + {ROUND_TRIPS} x rtt) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = sorted(data["latency"], key=lambda r: (r["mode"] != "node", r["scenario"], r["rtt_ms"]))
    for row in rows:
        goal = (
            f"{row['limit']:.3f}s {'met' if row['met'] else '**missed**'}" if "limit" in row else ""
        )
        added = f"{row['added_round_trips']:.1f}" if row["rtt_ms"] else ""
        lines.append(
            f"| {MODES[row['mode']]} | ({row['scenario']}) | {row['rtt_ms']:g} ms | "
            f"{row['median']:.3f}s | {row['worst']:.3f}s | {added} | {goal} |"
        )
    return "\n".join(lines)
