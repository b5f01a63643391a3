"""A node's peak memory after ``first`` items and after ``total`` items.

A fresh node (its own queue, so nothing earlier set its peak) runs a job of
``first`` no-op items, then one of ``total - first``; after each, /proc gives
the peak RSS (VmHWM) of the node process and of its pool processes. A node that
keeps no per-item or per-batch state has the same peak after both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.processes import NodeProcess, memory_of_tree
from benchmarks.runners import TIMEOUT, make_items
from benchmarks.tasks import task
from producer import Client
from taskfan.keys import JobKeys

Say = Callable[[str], None]
RSS_QUEUE = "taskfan-bench-rss"


def measure_rss(redis_url: str, first: int, total: int, say: Say) -> dict[str, Any]:
    client = Client.from_url(redis_url, RSS_QUEUE)
    node = NodeProcess(redis_url, RSS_QUEUE, processes=2)
    try:
        node.wait_ready(client)
        ready = memory_of_tree(node.pid)
        _run(client, first)
        after_first = memory_of_tree(node.pid)
        say(f"node memory after {first:,} items: {after_first}")
        _run(client, total - first)
        after_total = memory_of_tree(node.pid)
        say(f"node memory after {total:,} items: {after_total}")
    finally:
        node.stop()
    return {
        "items_first": first,
        "items_total": total,
        "ready": ready.to_json(),
        "after_first": after_first.to_json(),
        "after_total": after_total.to_json(),
        "ratio_tree_peak": after_total.tree_peak / after_first.tree_peak,
        "ratio_main_peak": after_total.main_peak / after_first.main_peak,
    }


def _run(client: Client, count: int) -> None:
    """Map the no-op task over ``count`` items at the automatic sizes; read every result."""
    job = client.map(task, make_items(count, 0))
    read = sum(1 for _ in job.results(timeout=TIMEOUT))
    client.redis.delete(*JobKeys(job.id).all())
    if read != count:
        raise RuntimeError(f"RSS run: {read} results for {count} items")
