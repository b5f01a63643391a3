"""One run of the suite: a private redis-server, a running node, every chosen scenario.

The redis-server is ``taskfan.server.RedisServer`` on a free port, never the
machine's own Redis. The node that scenarios (a), (b), (c) and ``submit`` share
is started once, before them, and is ready (warm) before the first timing; the
RSS measurement starts a fresh node of its own.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

from benchmarks import report
from benchmarks.config import SLOW_REPEATS, SLOW_SECONDS, THROUGHPUT, Options
from benchmarks.executor_side import measure_executor
from benchmarks.memory import measure_rss
from benchmarks.peers import REQUIRES, skip_reason
from benchmarks.peers.cluster import PeerCluster, PeerError
from benchmarks.processes import REPO, NodeProcess
from benchmarks.producer_side import measure_enqueue, measure_submit
from benchmarks.throughput import measure_scenario
from producer import Client
from taskfan.server import RedisServer

Say = Callable[[str], None]
NODE_QUEUE = "taskfan-bench"


def run(options: Options, say: Say) -> dict[str, Any]:
    started = time.perf_counter()
    plan = options.plan
    chosen = options.scenarios
    rq = options.rq and importlib.util.find_spec("rq") is not None
    if options.rq and not rq:
        say("rq is not installed: RQ is left out (pip install -e '.[bench]')")
    data: dict[str, Any] = {}
    # the peers' clusters stop (stack) before their redis-server does
    with RedisServer() as server, contextlib.ExitStack() as stack:
        data["meta"] = _meta(options, server.version, rq)
        client = Client.from_url(server.url, NODE_QUEUE)
        peers: list[PeerCluster] = []
        if options.peers and any(name in chosen for name in THROUGHPUT):
            data["peers"] = start_peers(options.peers, server.url, stack, say)
            peers = data["peers"].pop("clusters")
        if any(name in chosen for name in (*THROUGHPUT, "submit", "executor")):
            node = NodeProcess(server.url, NODE_QUEUE, processes=2)
            try:
                node.wait_ready(client)
                say(f"node pid {node.pid} ready on {server.url}")
                scenarios = {}
                for name in THROUGHPUT:
                    if name in chosen:
                        result = measure_scenario(
                            plan.scenarios[name],
                            client,
                            options.repeats,
                            server.url if rq else None,
                            say,
                            peers,
                        )
                        scenarios[name] = result.to_json()
                for peer in peers:  # no idle clusters beside the measurements below
                    peer.stop()
                if scenarios:
                    data["scenarios"] = scenarios
                if "submit" in chosen:
                    data["submit"] = measure_submit(
                        client, plan.submit_calls, plan.round_trip_calls, options.repeats, say
                    )
                if "executor" in chosen:
                    data["executor"] = measure_executor(
                        server.url, NODE_QUEUE, plan.executor_calls,
                        plan.executor_round_trips, options.repeats, say,
                    )  # fmt: skip
            finally:
                node.stop()
        if "enqueue" in chosen:
            data["enqueue"] = measure_enqueue(client, plan.enqueue_items, options.repeats, say)
        if "rss" in chosen:
            data["rss"] = measure_rss(server.url, plan.rss_first, plan.rss_total, say)
        if "rqdrain" in chosen and rq:
            from benchmarks.rq_drain import measure_rq_drain

            data["rq_drain"] = measure_rq_drain(
                server.url, plan.rq_drain_jobs, plan.rq_drain_num_calc, options.repeats, say
            )
        client.redis.close()
    data["goals"] = report.goals(data)
    data["meta"]["elapsed_seconds"] = time.perf_counter() - started
    return data


def start_peers(
    names: tuple[str, ...], redis_url: str, stack: contextlib.ExitStack, say: Say
) -> dict[str, Any]:
    """Start and warm every installed peer (each stopped when ``stack`` closes);
    the others, and any that fails to start, are skipped with the reason."""
    started: list[PeerCluster] = []
    skipped: dict[str, str] = {}
    versions: dict[str, str] = {}
    for name in names:
        reason = skip_reason(name)
        if reason is None:
            cluster = PeerCluster(name, redis_url)
            stack.callback(cluster.stop)
            try:
                cluster.wait_ready()
            except PeerError as exc:
                reason = f"failed to start: {str(exc).splitlines()[0]}"
                cluster.stop()
            else:
                started.append(cluster)
                versions[name] = version(REQUIRES[name][0])
                say(f"{name} {versions[name]} ready (driver pid {cluster.proc.pid})")
                continue
        skipped[name] = reason
        say(f"{name} skipped: {reason}")
    return {"ran": [c.name for c in started], "skipped": skipped, "versions": versions,
            "clusters": started}  # fmt: skip


def _meta(options: Options, redis_version: str, rq: bool) -> dict[str, Any]:
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "repeats": options.repeats,
        "slow_seconds": SLOW_SECONDS,
        "slow_repeats": SLOW_REPEATS,
        "quick": options.quick,
        "scenarios": list(options.scenarios),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "redis_server": redis_version,
        "redis_py": version("redis"),
        "rq": version("rq") if rq else None,
        "commit": _commit(),
    }


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()
