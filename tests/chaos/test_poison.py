"""Chaos: poison items (segfault, os._exit, an endless loop) among 10,000 good ones."""

from __future__ import annotations

import random
import time

import pytest
import redis

from producer import Client
from tests import tasks
from tests.chaos.census import census
from tests.chaos.conftest import Report
from tests.conftest import StartWorker

pytestmark = pytest.mark.chaos

GOOD = 10_000
#: the error each poison input must end with: (type, words of its message)
CAUSES = {
    tasks.SEGFAULT: ("WorkerProcessDied", "signal 11"),
    tasks.EXIT: ("WorkerProcessDied", "exit code 3"),
    tasks.HANG: ("HardTimeout", "hard timeout of 1.0s"),
}


def sprinkle(poisons: list[int], rng: random.Random) -> list[int]:
    """0..GOOD-1 with the poison inputs at random places."""
    items = list(range(GOOD))
    for poison in poisons:
        items.insert(rng.randrange(len(items) + 1), poison)
    return items


@pytest.mark.parametrize(
    ("kind", "poisons", "hard_timeout"),
    [
        # Large chunks: the node halves a chunk that kills its process until the
        # poison item is alone.
        ("crashes", [tasks.SEGFAULT] * 3 + [tasks.EXIT] * 3, None),
        # One item per chunk under a hard timeout; crashes too, on the same pool.
        ("hangs", [tasks.HANG] * 3 + [tasks.SEGFAULT, tasks.EXIT], 1.0),
    ],
)
def test_poison_items_fail_with_their_cause_and_good_items_succeed(
    kind: str,
    poisons: list[int],
    hard_timeout: float | None,
    start_worker: StartWorker,
    client: Client,
    r: redis.Redis,
    report: Report,
) -> None:
    nodes = [start_worker(processes=1) for _ in range(2)]
    items = sprinkle(poisons, random.Random(kind))
    began = time.monotonic()
    job = client.map(tasks.poison, items, hard_timeout=hard_timeout)
    assert job.wait(timeout=120), "\n".join(node.log() for node in nodes)
    elapsed = time.monotonic() - began

    found = census(r, job.id, expected=lambda i: items[i] * items[i])
    expected = {i: CAUSES[x] for i, x in enumerate(items) if x in CAUSES}
    causes = found.failed
    report(
        f"poison items ({kind}) among {GOOD:,} good ones",
        items=len(items),
        poison=len(poisons),
        failed=len(found.failed),
        good_ok=found.meta.ok,
        lost=found.lost,
        duplicated=found.duplicated,
        wrong=found.wrong,
        pool_restarts=sum(_restarts(node.log()) for node in nodes),
        job_time=elapsed,
    )
    assert (found.lost, found.duplicated, found.wrong) == (0, 0, 0)
    assert set(causes) == set(expected)
    for index, (type_name, words) in expected.items():
        assert causes[index][0] == type_name, (index, causes[index])
        assert words in causes[index][1], (index, causes[index])
    assert (found.meta.ok, found.meta.failed) == (GOOD, len(poisons))


def _restarts(log: str) -> int:
    """Pool rebuilds a node logged: a process died, or a hard timeout killed the pool."""
    return log.count("rebuilding the pool") + log.count("hard timeout of")
