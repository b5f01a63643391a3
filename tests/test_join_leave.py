"""Nodes join and leave a running job: 1 node, then 4, then 1 again (issue 19).

One job of sleeping items (20 ms each, so this machine's 2 CPUs are not the
limit) starts on one node of 2 processes. Three more nodes join, then get
SIGTERM and hand their batches back. The job's done counter, read at the edges
of a window in each phase, gives items per second per phase: it follows the
node count (the 4-node phase at least twice the first 1-node phase's rate, the
last 1-node phase well below the 4-node one), and the census counts every item
exactly once with its right value.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

import pytest
import redis

from producer import Client
from producer.job import Job
from taskfan import keys
from tests import tasks
from tests.chaos.census import census, held_batches
from tests.conftest import StartWorker
from tests.helpers import wait_until
from tests.workers import WorkerProcess

pytestmark = pytest.mark.slow

ITEMS = 5_000
BATCH = 20  #: 0.4 s of one process's sleep: many batches, so joining nodes find work
CHUNK = 2
WINDOW = 4.0  #: seconds each phase is measured over
ENV = {"TASKFAN_HEARTBEAT_INTERVAL": "0.5"}


@dataclass(frozen=True)
class Phase:
    name: str
    nodes: int
    items: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.items / self.seconds


def measure(job: Job, name: str, nodes: int) -> Phase:
    """Items the job completed over WINDOW seconds (of wall time), from its own counters."""
    before, started = job.meta().done, time.monotonic()
    job.wait(timeout=WINDOW)  # the measuring window itself, cut short if the job ends
    after, ended = job.meta().done, time.monotonic()
    return Phase(name, nodes, after - before, ended - started)


def batches_done(r: redis.Redis, name: str) -> int:
    """The batches node ``name`` recorded, by its record (written each heartbeat)."""
    return int(r.hget(keys.node(name), "batches_done") or 0)


def items_done(r: redis.Redis, name: str) -> int:
    return int(r.hget(keys.node(name), "items_done") or 0)


def test_a_running_job_follows_nodes_joining_and_leaving(
    start_worker: StartWorker,
    client: Client,
    r: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def start(name: str) -> WorkerProcess:
        return start_worker("--name", name, processes=2, env=ENV)

    first = start("join-0")
    began = time.monotonic()
    job = client.map(tasks.slow_square, range(ITEMS), batch_size=BATCH, chunksize=CHUNK)
    wait_until(lambda: job.meta().done > 0, timeout=60, message=first.log)
    one = measure(job, "1 node", 1)

    joined = [start(f"join-{i}") for i in (1, 2, 3)]
    for i, node in enumerate(joined, 1):
        # in steady state: its pool warm, it recorded a batch and holds the next
        wait_until(
            lambda i=i: batches_done(r, f"join-{i}") and held_batches(r, f"join-{i}"),  # type: ignore[misc]
            timeout=60,
            message=node.log,
        )
    four = measure(job, "4 nodes", 4)
    done_by = {f"join-{i}": items_done(r, f"join-{i}") for i in range(4)}

    for node in joined:
        node.signal(signal.SIGTERM)
    codes = [node.wait(timeout=60) for node in joined]
    assert not job.wait(timeout=0), "the job ended before the last phase: make it longer"
    back = measure(job, "1 node again", 1)

    assert job.wait(timeout=120), f"the job did not finish on one node:\n{first.log()}"
    elapsed = time.monotonic() - began
    found = census(r, job.id, expected=lambda i: i * i)
    with capsys.disabled():
        figures = ", ".join(
            f"{p.name} {p.items} items in {p.seconds:.1f}s = {p.rate:.0f}/s"
            for p in (one, four, back)
        )
        print(
            f"\n[scale] join and leave: {ITEMS} items of 20 ms in batches of {BATCH}; {figures}; "
            f"items done by node at the end of the 4-node phase {done_by}; "
            f"lost {found.lost}, duplicated {found.duplicated}, wrong {found.wrong}, "
            f"whole job {elapsed:.1f}s"
        )

    assert codes == [0, 0, 0], [node.log() for node in joined]
    assert (found.lost, found.duplicated, found.wrong, found.failed) == (0, 0, 0, {})
    assert found.meta.ok == ITEMS
    assert all(done_by[f"join-{i}"] > 0 for i in (1, 2, 3)), done_by
    # 4 nodes of sleeping work: ideally 4x; on a loaded machine, at least 2x
    assert four.rate >= 2 * one.rate, (one, four)
    assert back.rate <= 0.75 * four.rate, (four, back)
