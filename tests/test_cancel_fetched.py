"""Cancellation reaches work a node already fetched: a batch of a job cancelled
while it sits in the node (read, waiting for a free process) does not run."""

from __future__ import annotations

from pathlib import Path

import redis

from producer import Client
from taskfan.keys import GROUP, QueueKeys
from tests import tasks
from tests.conftest import StartWorker
from tests.helpers import FAST_BEAT, entries_of, wait_until
from tests.test_retries_node import node_record

STREAM = QueueKeys("default").stream


def test_a_batch_fetched_before_its_job_was_cancelled_does_not_run(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, tmp_path: Path
) -> None:
    client = Client.from_url(redis_url)
    worker = start_worker(processes=1, env=FAST_BEAT)
    release = tmp_path / "release"
    counters = [str(tmp_path / f"count{i}") for i in range(2)]
    # Two chunks of one item each fill the pool (one running, one queued behind it).
    blocker = client.map(
        tasks.count_until, [(c, str(release)) for c in counters], star=True, batch_size=2,
        chunksize=1,
    )  # fmt: skip
    wait_until(lambda: Path(counters[0]).exists(), timeout=30, message=worker.log)
    marker = tmp_path / "ran"
    victim = client.map(tasks.touch, [str(marker)], batch_size=1)
    # The node takes the victim's batch (read, its job found active, its chunk waiting
    # for the pool: the node record counts it in flight), then the job is cancelled.
    wait_until(lambda: node_record(r).get("in_flight") == "2", timeout=30, message=worker.log)
    assert r.xpending(STREAM, GROUP)["pending"] == 2
    assert victim.cancel()
    wait_until(lambda: not entries_of(r, victim.id), timeout=30, message=worker.log)
    release.write_text("go")
    assert list(blocker.results(timeout=60)) == [1, 1]
    assert list(client.map(tasks.square, [3]).results(timeout=60)) == [9]
    assert not marker.exists(), "the cancelled job's batch ran"
    log = worker.log()
    assert f"job {victim.id} batch 0: the job was cancelled; 1 items not run" in log, log
    assert worker.proc.poll() is None
