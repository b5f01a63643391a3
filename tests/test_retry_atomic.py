"""``retry_failed`` and dead-letter requeues are atomic (issue 14, item 3).

A retry is cut at each of its Redis round trips in turn: by a ConnectionError
before the round trip (nothing done), after it (done, reply lost), and by a
SIGKILL of the process doing it. Whatever the cut, the job must settle either
as it was (finished, its failures counted, retriable again) or fully in its new
round, never "running" for ever with its failures uncounted; and a retry
started afterwards must work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client
from producer.job import Job
from producer.ops import deadletters
from taskfan import scripts
from taskfan.errors import TaskfanError
from taskfan.keys import QueueKeys
from tests import tasks
from tests.conftest import StartWorker
from tests.faults import Fault, faulty_client, kill_retry_at
from tests.helpers import wait_until

STREAM = QueueKeys("default").stream
ITEMS = 4
FAILING = {1, 2}  #: items that fail their first call


def _finished_job(client: Client, folder: Path) -> Job:
    folder.mkdir()
    items = [(str(folder / f"c{i}"), 1 if i in FAILING else 0) for i in range(ITEMS)]
    job = client.map(tasks.fail_times, items, star=True, batch_size=2)
    assert job.wait(timeout=60)
    assert job.progress() == (ITEMS, len(FAILING), ITEMS)
    return job


def _settled(r: redis.Redis, job: Job) -> bool:
    """Nothing of the job left on the queue, and the job finished."""
    entries: Any = r.xrange(STREAM)
    mine = [e for _, e in entries if e.get(b"j") == job.id.encode()]
    return not mine and job.status == "finished"


def _check_whole(r: redis.Redis, job: Job, where: str) -> int:
    """The job's counters agree with its outcomes, and its keys expire; returns
    how many items stand failed."""
    wait_until(lambda: _settled(r, job), timeout=20,
               message=lambda: f"{where}: the job settles (it is {job.status})")  # fmt: skip
    raw: Any = r.hgetall(job.keys.meta)
    meta = job.meta()
    outcomes = list(job.outcomes())
    failed = sum(not o.ok for o in outcomes)
    assert [o.index for o in outcomes] == list(range(ITEMS)), where
    assert (meta.ok, meta.failed) == (ITEMS - failed, failed), where
    expected = meta.batches + int(raw.get(b"retry_batches", 0))
    assert meta.batches_done == expected, where
    for key in job.keys.all():
        assert r.ttl(key) > 0, f"{where}: {key} does not expire"
    return failed


def _finish(r: redis.Redis, client: Client, job: Job, where: str) -> None:
    """Retriable again if need be; in the end every item succeeded."""
    if _check_whole(r, job, where):
        assert client.job(job.id).retry_failed() == len(FAILING), where
        assert job.wait(timeout=60), where
        assert _check_whole(r, job, where) == 0, where


@pytest.mark.parametrize("mode", ["before", "after"])
def test_a_retry_cut_at_any_round_trip_leaves_the_job_whole(
    start_worker: StartWorker, redis_url: str, r: redis.Redis, tmp_path: Path, mode: str
) -> None:
    start_worker(processes=1)
    client = Client.from_url(redis_url)
    at = 1
    while True:
        job = _finished_job(client, tmp_path / f"cut{at}")
        fault = Fault(at, mode)
        try:
            Client(faulty_client(redis_url, fault)).job(job.id).retry_failed()
        except (ConnectionError, TaskfanError):
            assert fault.fired
        _finish(r, client, job, f"fault {mode} round trip {at}")
        if not fault.fired:
            break  # the retry needs fewer round trips: every one was cut
        at += 1
    assert at > 3, at


def test_a_retry_killed_at_any_round_trip_leaves_the_job_whole(
    start_worker: StartWorker, redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    start_worker(processes=1)
    client = Client.from_url(redis_url)
    at = 1
    while True:
        job = _finished_job(client, tmp_path / f"kill{at}")
        line = kill_retry_at(redis_url, job.id, at)
        _finish(r, client, job, f"SIGKILL after round trip {at}")
        if line.startswith("done"):
            break
        assert line.startswith("paused"), line
        at += 1
    assert at > 3, at


def _dead_letter_of(r: redis.Redis, job: Job) -> str | None:
    found = [d for d in deadletters.list_dead(r, "default") if d.job_id == job.id]
    return found[0].id if found else None


@pytest.mark.parametrize("mode", ["before", "after"])
def test_a_requeue_cut_at_any_round_trip_leaves_the_job_whole(
    start_worker: StartWorker, redis_url: str, r: redis.Redis, mode: str
) -> None:
    # The node refuses the function: each requeue of its dead letter is dead-lettered
    # again, its items failed again, and the next cut can requeue that one.
    start_worker("--allow", "tests.marker_task", processes=1)
    client = Client.from_url(redis_url)
    job = client.map(tasks.identity, [1, 2, 3], batch_size=3)
    assert job.wait(timeout=60)
    at = 1
    while True:
        where = f"requeue cut {mode} round trip {at}"
        dead_id = wait_until(lambda: _dead_letter_of(r, job) or "", timeout=20, message=where)
        fault = Fault(at, mode)
        try:
            deadletters.requeue(faulty_client(redis_url, fault), "default", dead_id)
        except (redis.ConnectionError, TaskfanError):
            assert fault.fired, where
        wait_until(lambda: _settled(r, job) and _dead_letter_of(r, job), timeout=20,
                   message=f"{where}: the job settles")  # fmt: skip
        raw: Any = r.hgetall(job.keys.meta)
        meta = job.meta()
        assert (meta.ok, meta.failed) == (0, 3), where
        assert meta.batches_done == meta.batches + int(raw.get(b"retry_batches", 0)), where
        assert [o.ok for o in job.outcomes()] == [False] * 3, where
        for key in job.keys.all():
            assert r.ttl(key) > 0, f"{where}: {key} does not expire"
        if not fault.fired:
            break
        at += 1
    assert at > 3, at


def test_rounds_prepared_together_open_once_and_the_other_is_void(
    client: Client, r: redis.Redis
) -> None:
    """Two retries of one job at once (or a retry run again after a crash): the
    first round to open wins, the other never opens and its results are dropped."""
    job = client.map(tasks.square, [1, 2, 3], batch_size=3)  # no node: nothing runs
    r.hset(job.keys.meta, mapping={"state": "finished", "failed": 3, "batches_done": 1})
    first = scripts.prepare_retry_round(r, job.keys, 3, 1, "[0]")
    second = scripts.prepare_retry_round(r, job.keys, 3, 1, "[0]")
    assert (first, second) == (1, 2)
    assert job.meta().failed == 3  # prepared: nothing changed yet
    # A node records the second round's entry before its producer opened it.
    assert scripts.record_batch(r, job.keys, "0.2", b"entry", 3, 0, 0.0) == scripts.RECORDED_LAST
    assert scripts.open_round(r, job.keys, second) == second  # the producer, late: the same
    assert scripts.open_round(r, job.keys, first) == 0  # void
    assert scripts.record_batch(r, job.keys, "0.1", b"entry", 3, 0, 0.0) == scripts.ROUND_VOID
    meta = job.meta()
    assert (meta.retry_round, meta.rounds, meta.overlays) == (2, 1, {0: ("0.2",)})
    assert (meta.ok, meta.failed, meta.state.value) == (3, 0, "finished")
    fields: Any = r.hkeys(job.keys.meta)
    assert not [f for f in fields if f.startswith(b"prep:")]
    # A third round numbers past both.
    assert scripts.prepare_retry_round(r, job.keys, 1, 1, "[0]") == 3
