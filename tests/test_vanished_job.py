"""Waiters notice a job whose keys vanish (issue 14, item 4).

A FLUSHDB, an expiry or a purge takes a job's meta, results and events away.
Every waiter (``Job.wait``, ``results``, ``outcomes``, ``as_completed``, the
Executor's futures, ``taskfan wait``) must raise JobNotFound within seconds,
whether it has a deadline or not, instead of blocking until the deadline.
No node runs here: the jobs stay queued until their keys go.
"""

from __future__ import annotations

import functools
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from producer import Client, Executor, reader
from producer.events import Events
from producer.job import Job
from taskfan.errors import JobNotFound
from taskfan.keys import JobKeys
from tests import tasks
from tests.cli_support import REPO, clean_environ, taskfan
from tests.helpers import wait_until

#: seconds a waiter may take to notice; its own deadline is far longer
NOTICE = 8.0
DEADLINE = 120.0

Vanish = Callable[[redis.Redis, str], None]


def _flush(r: redis.Redis, job_id: str) -> None:
    r.flushdb()


def _delete(r: redis.Redis, job_id: str) -> None:  # what a purge does to the job
    r.delete(*JobKeys(job_id).all())


def _expire(r: redis.Redis, job_id: str) -> None:
    for key in JobKeys(job_id).all():
        r.pexpire(key, 1)


def _blocked(r: redis.Redis) -> int:
    return int(r.info("clients")["blocked_clients"])


WAITS: dict[str, Callable[[Job, float | None], Any]] = {
    "wait": lambda job, timeout: job.wait(timeout),
    "results": lambda job, timeout: list(job.results(timeout)),
    "outcomes": lambda job, timeout: list(job.outcomes(timeout)),
    "as_completed": lambda job, timeout: list(job.as_completed(timeout)),
}


class Waiter(threading.Thread):
    """Runs one wait in a thread; keeps what it raised and when."""

    def __init__(self, wait: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._wait = wait
        self.error: BaseException | None = None
        self.ended_at = 0.0

    def run(self) -> None:
        try:
            self._wait()
        except BaseException as exc:
            self.error = exc
        self.ended_at = time.monotonic()


@pytest.mark.parametrize("vanish", [_flush, _delete, _expire], ids=["flushdb", "purge", "expiry"])
def test_every_waiter_notices_a_vanished_job(
    r: redis.Redis, client: Client, vanish: Vanish
) -> None:
    job = client.map(tasks.square, range(10), batch_size=2)
    waiters = {
        f"{name}({timeout})": Waiter(functools.partial(wait, job, timeout))
        for name, wait in WAITS.items()
        for timeout in (DEADLINE, None)
    }
    executor = Executor(client)
    future = executor.submit(tasks.square, 3)
    for waiter in waiters.values():
        waiter.start()
    wait_until(lambda: _blocked(r) > len(waiters), timeout=30,
               message="every waiter and the Executor's collector blocked")  # fmt: skip
    gone_at = time.monotonic()
    vanish(r, job.id)
    vanish(r, executor._job.id if executor._job else "")
    for name, waiter in waiters.items():
        waiter.join(NOTICE)
        assert not waiter.is_alive(), f"{name} still waits"
        assert isinstance(waiter.error, JobNotFound), (name, waiter.error)
        assert waiter.ended_at - gone_at < NOTICE
    with pytest.raises(JobNotFound):
        future.result(timeout=NOTICE)
    executor.shutdown(wait=False)


def test_taskfan_wait_notices_a_vanished_job(r: redis.Redis, redis_url: str) -> None:
    job = Client.from_url(redis_url).map(tasks.square, range(4))
    proc = subprocess.Popen(
        taskfan("wait", job.id, "--timeout", str(DEADLINE), "--redis-url", redis_url),
        cwd=REPO, env=clean_environ(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: _blocked(r), timeout=30, message="taskfan wait blocked")
        _delete(r, job.id)
        _, err = proc.communicate(timeout=NOTICE + 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, err
    assert f"job {job.id} not found" in err


def test_results_of_a_job_that_vanished_between_its_event_and_the_read(
    r: redis.Redis, client: Client
) -> None:
    job = client.map(tasks.square, range(4), batch_size=2)
    r.delete(job.keys.meta, job.keys.results)  # purged after its reader saw an event
    with pytest.raises(JobNotFound):
        reader.fetch(job, ["0"], "pickle")
    with pytest.raises(JobNotFound):
        reader.fetch(job, ["0"], "pickle", Events(r, job.keys, DEADLINE))
