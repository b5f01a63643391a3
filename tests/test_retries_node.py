"""Retries held by the node, end to end: real nodes on a real Redis.

An item waiting out its backoff occupies no pool process: the rest of its chunk
settles and other work runs meanwhile; its batch stays held, its lease renewed,
until the item has its final outcome.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client
from taskfan import keys
from taskfan.keys import GROUP, QueueKeys
from tests import tasks
from tests.conftest import StartWorker
from tests.helpers import wait_until

FAST = {"TASKFAN_VISIBILITY_TIMEOUT": "2", "TASKFAN_HEARTBEAT_INTERVAL": "0.5"}
STREAM = QueueKeys("default").stream


def node_record(r: redis.Redis) -> dict[str, str]:
    """The record of the only node (empty until it published one)."""
    ids: Any = r.zrange(keys.NODES, 0, -1)
    if not ids:
        return {}
    raw: Any = r.hgetall(keys.node(ids[0].decode()))
    return {k.decode(): v.decode() for k, v in raw.items()}


def calls(counter: Path) -> int:
    """How many times a task counting its calls in ``counter`` ran."""
    return int(counter.read_text()) if counter.exists() else 0


def waiting_to_retry(r: redis.Redis, after: float = 0.0) -> dict[str, str]:
    """The node record, once it shows an item waiting to retry (in a record
    published after ``after``, a time.time())."""

    def found() -> dict[str, str]:
        record = node_record(r)
        fresh = float(record.get("heartbeat_at", 0)) > after
        return record if fresh and record.get("retrying") == "1" else {}

    return wait_until(found, timeout=30, message="an item waiting to retry")


def held(r: redis.Redis) -> list[dict[str, Any]]:
    try:
        found: Any = r.xpending_range(STREAM, GROUP, min="-", max="+", count=100)
    except redis.ResponseError:  # no group yet
        return []
    return list(found)


@pytest.mark.cluster
def test_a_one_process_node_works_on_while_an_item_waits_out_its_backoff(
    start_worker: StartWorker, client: Client, r: redis.Redis, tmp_path: Path
) -> None:
    worker = start_worker(processes=1, env=FAST)
    # One chunk: an item that always fails (one retry, after 30 to 60 s), and a quick one.
    bad, good = tmp_path / "bad", tmp_path / "good"
    stuck = client.map(tasks.fail_times, [(str(bad), 9), (str(good), 0)], star=True, retries=1,
                       backoff=60.0, backoff_max=60.0, batch_size=2, chunksize=2)  # fmt: skip
    wait_until(lambda: calls(bad) == 1, timeout=30, message="the first attempt")
    # Its only process is free for other work well before the retry is due.
    quick = client.map(tasks.square, range(5))
    assert list(quick.results(timeout=20)) == [0, 1, 4, 9, 16]
    quick_done = time.time()
    assert (calls(bad), calls(good)) == (1, 1)  # the retry is not due yet
    assert stuck.progress().done == 0  # its batch is recorded once every item is settled
    # A record published since (the one before may show the quick chunk running).
    record = waiting_to_retry(r, after=quick_done)
    assert record["busy"] == "0" and record["items_retried"] == "1"
    # Its lease keeps being renewed while it waits: past the 2 s visibility timeout,
    # the entry is still idle for less than that, and was delivered once.
    since = float(record["heartbeat_at"])
    wait_until(lambda: float(node_record(r).get("heartbeat_at", 0)) > since + 3, timeout=30,
               message="three seconds of heartbeats")  # fmt: skip
    (entry,) = held(r)
    assert entry["time_since_delivered"] < 2000 and entry["times_delivered"] == 1
    # Cancelled: the node drops the waiting item and acknowledges the batch, unrecorded.
    assert stuck.cancel()
    wait_until(lambda: not held(r), timeout=20, message="the cancelled batch acknowledged")
    assert "the job was cancelled; 0 items not run, 1 waiting to retry dropped" in worker.log()
    wait_until(lambda: node_record(r).get("retrying") == "0", timeout=10,
               message="nothing waiting to retry")  # fmt: skip
    assert calls(bad) == 1


@pytest.mark.cluster
def test_each_attempt_has_its_own_soft_and_hard_timeouts(
    start_worker: StartWorker, client: Client, tmp_path: Path
) -> None:
    start_worker()
    # Two quick failures, then a success. The backoffs (1.5 s at least) would run
    # past the 1 s hard timeout if they were spent in the item's process.
    hard = client.map(tasks.fail_times, [(str(tmp_path / "h"), 2)], star=True, hard_timeout=1.0,
                      retries=2, backoff=1.0, backoff_max=2.0)  # fmt: skip
    (outcome,) = hard.outcomes(timeout=60)
    assert (outcome.ok, outcome.value, outcome.attempts) == (True, 3, 3)
    # The first call runs past the soft timeout, the retry is quick.
    soft = client.map(tasks.slow_first, [(str(tmp_path / "s"), 5.0)], star=True, timeout=0.5,
                      retries=1, retry_on=[TimeoutError], backoff=0.01)  # fmt: skip
    (outcome,) = soft.outcomes(timeout=60)
    assert (outcome.ok, outcome.value, outcome.attempts) == (True, 2, 2)


def test_a_retry_that_kills_its_process_fails_alone_and_its_chunk_does_not_run_again(
    start_worker: StartWorker, client: Client, tmp_path: Path
) -> None:
    start_worker(processes=1)
    items = [(str(tmp_path / f"c{i}"), i == 2) for i in range(6)]
    job = client.map(tasks.fail_then_crash, items, star=True, retries=2, backoff=0.01,
                     batch_size=6, chunksize=6)  # fmt: skip
    outcomes = list(job.outcomes(timeout=60))
    assert [o.index for o in outcomes] == list(range(6))
    poison = outcomes.pop(2)
    assert poison.error is not None and poison.error.type == "WorkerProcessDied"
    assert "signal 11 (SIGSEGV)" in poison.error.message and poison.attempts == 2
    # The others settled on their first run: the crash broke only the retry's chunk.
    assert [(o.ok, o.value, o.attempts) for o in outcomes] == [(True, 1, 1)] * 5


def test_a_stopping_node_runs_a_retry_due_within_its_grace_period(
    start_worker: StartWorker, client: Client, r: redis.Redis, tmp_path: Path
) -> None:
    worker = start_worker(processes=1, env={**FAST, "TASKFAN_GRACE_PERIOD": "30"})
    counter = tmp_path / "c"
    job = client.map(tasks.fail_times, [(str(counter), 1)], star=True, retries=1, backoff=3.0,
                     backoff_max=3.0)  # fmt: skip
    wait_until(lambda: calls(counter) == 1, timeout=30, message="the first attempt")
    worker.signal(signal.SIGTERM)  # the retry is due 1.5 to 3 s after the first attempt
    assert worker.wait(timeout=60) == 0
    (outcome,) = job.outcomes(timeout=10)
    assert (outcome.ok, outcome.value, outcome.attempts) == (True, 2, 2)
    log = worker.log()
    assert "handed" not in log and "grace period" not in log, log


def test_a_stopping_node_hands_back_at_once_a_batch_whose_retry_falls_after_its_grace(
    start_worker: StartWorker, client: Client, r: redis.Redis, tmp_path: Path
) -> None:
    env = {**FAST, "TASKFAN_GRACE_PERIOD": "20"}
    first = start_worker(processes=1, env=env)
    counter = tmp_path / "c"
    job = client.map(tasks.fail_times, [(str(counter), 1)], star=True, retries=1, backoff=120.0,
                     backoff_max=120.0)  # fmt: skip
    wait_until(lambda: calls(counter) == 1, timeout=30, message="the first attempt")
    first.signal(signal.SIGTERM)  # the retry is due 60 to 120 s after the first attempt
    assert first.wait(timeout=60) == 0
    log = first.log()
    # Back at once: the node did not wait out its grace period for a retry due after it.
    assert "handed 1 unfinished batches back" in log and "grace period" not in log, log
    start_worker(processes=1, env=env)
    (outcome,) = job.outcomes(timeout=30)
    # Another node ran the batch again: the item's second call, its first attempt there.
    assert (outcome.ok, outcome.value, outcome.attempts) == (True, 2, 1)
