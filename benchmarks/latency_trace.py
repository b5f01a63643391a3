"""``python -m benchmarks.latency_trace``: where a job's round trips go.

Starts a redis-server of its own, one node of 2 processes behind a
``DelayProxy`` and a producer behind another (the same round trip), runs one
job, and prints every command Redis ran during it (from ``MONITOR``), in
milliseconds since the job started, marked ``N`` (node) or ``P`` (producer) by
the connection it came on, with the gaps that are round trips spent waiting.
docs/scaling.md reads its traces.

    .venv/bin/python -m benchmarks.latency_trace --rtt 40 --scenario c
    .venv/bin/python -m benchmarks.latency_trace --rtt 20 --items 200 --batch-size 50
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from typing import Any
from urllib.parse import urlparse

import redis

from benchmarks.config import AUTO, Options
from benchmarks.delay_proxy import DelayProxy
from benchmarks.processes import NodeProcess
from benchmarks.runners import make_items, time_taskfan
from producer import Client
from taskfan.server import RedisServer

QUEUE = "taskfan-trace"
#: commands of the reader's own bookkeeping, left out of the trace
QUIET = ("INFO", "MONITOR", "CLIENT", "PING")


class Monitor:
    """Collects ``MONITOR`` lines (server time, client address, command) in a thread."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._monitor: Any = self._client.monitor()
        self.lines: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Monitor:
        self._monitor.__enter__()
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for line in self._monitor.listen():
                self.lines.append(line)
        except (redis.ConnectionError, ValueError, AttributeError):
            return

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(redis.RedisError):
            self._monitor.connection.disconnect()
        self._thread.join(5)
        self._client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rtt", type=float, default=40.0, help="round trip in ms")
    parser.add_argument("--scenario", default="c", choices=("b", "c"))
    parser.add_argument("--items", type=int, help="instead of the scenario's count")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--width", type=int, default=100, help="characters per command shown")
    args = parser.parse_args(argv)
    scenario = Options(quick=False).plan.scenarios[args.scenario]
    items = make_items(args.items or scenario.items, scenario.num_calc)
    setting = (args.batch_size, None) if args.batch_size else AUTO
    with RedisServer() as server:
        target = urlparse(server.url)
        assert target.hostname and target.port
        with (
            DelayProxy(target.hostname, target.port) as node_proxy,
            DelayProxy(target.hostname, target.port) as producer_proxy,
        ):
            warm = Client.from_url(server.url, QUEUE)
            node = NodeProcess(f"{node_proxy.url}?client_name={NODE}", QUEUE, processes=2)
            try:
                node.wait_ready(warm)
                client = Client.from_url(f"{producer_proxy.url}?client_name={PRODUCER}", QUEUE)
                for proxy in (node_proxy, producer_proxy):
                    proxy.rtt = args.rtt / 1000
                time_taskfan(client, items[:100], AUTO)  # the delay settles, the cost is known
                time_taskfan(client, items, setting)  # and this job's own cost too
                with Monitor(server.url) as monitor:
                    started = time.time()
                    seconds, _ = time_taskfan(client, items, setting)
                    names = _names(server.url)
            finally:
                node.stop()
    print(f"job of {len(items)} items, round trip {args.rtt:g} ms (node and producer): "
          f"{seconds * 1000:.0f} ms; N: node, P: producer; +ms: since that side's last "
          "command")  # fmt: skip
    _print(monitor.lines, started, names, args.width)


NODE = "trace-node"
PRODUCER = "trace-producer"


def _names(url: str) -> dict[str, str]:
    """Client address (ip:port, as Redis sees it) -> N or P, by connection name."""
    direct = redis.Redis.from_url(url)
    try:
        listed: Any = direct.client_list()
    finally:
        direct.close()
    tags = {NODE: "N", PRODUCER: "P"}
    return {c["addr"]: tags[c["name"]] for c in listed if c.get("name") in tags}


def _print(lines: list[dict[str, Any]], started: float, names: dict[str, str], width: int) -> None:
    last: dict[str, float] = {}
    who = "?"
    for line in lines:
        command = str(line.get("command", ""))
        if command.split(" ", 1)[0].upper() in QUIET:
            continue
        at = (float(line["time"]) - started) * 1000
        address = f"{line.get('client_address', '')}:{line.get('client_port', '')}"
        lua = line.get("client_type") == "lua"
        if not lua:
            who = names.get(address, "?")
        gap = "" if lua or who not in last else f"+{at - last[who]:.0f}"
        if not lua:
            last[who] = at
        print(f"{at:8.1f} {gap:>5} {who}{'  lua' if lua else ''} {command[:width]}")


if __name__ == "__main__":
    main()
