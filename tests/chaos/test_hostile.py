"""Chaos: hostile items among 10,000 good ones, on two nodes: tasks that raise
what is not an Exception (sys.exit(), KeyboardInterrupt, ...), and results and
exceptions a reader cannot decode. Each fails alone; no node exits."""

from __future__ import annotations

import random
import time

import pytest
import redis

from producer import Client
from tests import tasks
from tests.chaos.census import census
from tests.chaos.conftest import Report
from tests.chaos.test_poison import GOOD, sprinkle
from tests.conftest import StartWorker

pytestmark = pytest.mark.chaos

SCENARIOS = {
    "BaseException": [
        tasks.SYS_EXIT, tasks.SYSTEM_EXIT, tasks.KEYBOARD_INTERRUPT, tasks.GENERATOR_EXIT,
        tasks.CUSTOM_BASE, tasks.PICKLE_EXITS, tasks.EXITING_STR,
    ],
    "unreadable results": [
        tasks.TWO_ARG_ERROR, tasks.REBUILD_RAISES, tasks.REBUILDS_WRONGLY,
        tasks.NODE_ONLY_VALUE, tasks.NODE_ONLY_ERROR, tasks.BAD_STR, tasks.BAD_REPR,
    ],
}  # fmt: skip


@pytest.mark.parametrize("kind", SCENARIOS)
def test_hostile_items_fail_alone_and_no_node_exits(
    kind: str, start_worker: StartWorker, client: Client, r: redis.Redis, report: Report
) -> None:
    nodes = [start_worker(processes=1) for _ in range(2)]
    hostile = SCENARIOS[kind] * 2
    items = sprinkle(hostile, random.Random(kind))
    began = time.monotonic()
    job = client.map(tasks.hostile, items)
    assert job.wait(timeout=120), "\n".join(node.log() for node in nodes)
    elapsed = time.monotonic() - began

    found = census(r, job.id, expected=lambda i: items[i] * items[i])
    alive = sum(node.proc.poll() is None for node in nodes)
    expected = {i: tasks.HOSTILE[x] for i, x in enumerate(items) if x in tasks.HOSTILE}
    read_back = list(job.outcomes())  # through the reader, as a user reads them
    report(
        f"hostile items ({kind}) among {GOOD:,} good ones",
        items=len(items),
        hostile=len(hostile),
        failed=len(found.failed),
        lost=found.lost,
        duplicated=found.duplicated,
        wrong=found.wrong,
        nodes_alive=f"{alive}/{len(nodes)}",
        job_time=elapsed,
    )
    assert (found.lost, found.duplicated, found.wrong) == (0, 0, 0)
    assert alive == len(nodes), "\n".join(node.log() for node in nodes)
    assert {i: cause[0] for i, cause in found.failed.items()} == expected
    assert [o.index for o in read_back if not o.ok] == sorted(expected)
    assert all(o.value == items[o.index] ** 2 for o in read_back if o.ok)
