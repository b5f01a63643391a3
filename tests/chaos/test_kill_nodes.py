"""Chaos: SIGKILL a random node about every second while a large job runs."""

from __future__ import annotations

import os
import random
import signal
import statistics
import time
from dataclasses import dataclass

import pytest
import redis

from producer import Client
from tests import tasks
from tests.chaos.census import census, held_batches, recorded_at, recovery, redis_now
from tests.chaos.conftest import Report
from tests.conftest import StartWorker
from tests.workers import WorkerProcess

pytestmark = pytest.mark.chaos

NODES = 3
#: 72,000 items of 1 ms on 3 single-process nodes: 24 s at best, about 30 s with the kills
ITEMS = 72_000
BATCH = 200
PERIOD = 1.0  #: seconds between kills
MIN_KILLS = 20
MAX_KILLS = 90  #: on a very slow machine, stop killing and let the job end
ENV = {
    "TASKFAN_VISIBILITY_TIMEOUT": "2",
    "TASKFAN_HEARTBEAT_INTERVAL": "0.5",
    # Delivery limits are tested elsewhere: here every item must succeed however
    # often its batch's nodes die.
    "TASKFAN_MAX_DELIVERIES": "1000",
}


@dataclass(frozen=True)
class Kill:
    node: str
    at: float  #: Redis clock
    held: set[str]  #: results fields of the batches the node held


def test_nodes_killed_every_second_lose_and_duplicate_nothing(
    start_worker: StartWorker, client: Client, r: redis.Redis, report: Report
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    names = iter(range(1_000_000))

    def start(slot: int) -> tuple[str, WorkerProcess]:
        name = f"chaos-{slot}-{next(names)}"
        return name, start_worker("--name", name, processes=1, env=ENV)

    nodes = [start(slot) for slot in range(NODES)]
    began = time.monotonic()
    job = client.map(tasks.nap_square, range(ITEMS), batch_size=BATCH)
    kills: list[Kill] = []
    # The job's own wait paces the kills: one every PERIOD seconds until it is done.
    while not job.wait(timeout=PERIOD) and len(kills) < MAX_KILLS:
        slot = rng.randrange(NODES)
        name, victim = nodes[slot]
        victim.signal(signal.SIGKILL)
        victim.wait()
        kills.append(Kill(name, redis_now(r), held_batches(r, name)))
        nodes[slot] = start(slot)
    assert job.wait(timeout=120), "the job did not finish after the kills stopped"
    elapsed = time.monotonic() - began

    assert len(kills) >= MIN_KILLS, (
        f"the job finished after {len(kills)} kills: make it longer (seed {seed})"
    )
    found = census(r, job.id, expected=lambda i: i * i)
    recorded = recorded_at(r, job.id)
    recoveries = [recovery(kill.held, kill.at, recorded) for kill in kills]
    times = [seconds for seconds, _ in recoveries if seconds is not None]
    report(
        "3 nodes, a random one SIGKILLed every second",
        items=ITEMS,
        batches=found.meta.batches,
        kills=len(kills),
        batches_rerun=sum(rerun for _, rerun in recoveries),
        lost=found.lost,
        duplicated=found.duplicated,
        wrong=found.wrong,
        recovery_median=statistics.median(times) if times else None,
        recovery_max=max(times) if times else None,
        job_time=elapsed,
        seed=seed,
    )
    assert (found.lost, found.duplicated, found.wrong, found.failed) == (0, 0, 0, {})
    meta = found.meta
    assert (meta.ok, meta.failed, meta.batches_done) == (ITEMS, 0, meta.batches)
    assert found.results_fields == meta.batches
    assert job.status == "finished"
