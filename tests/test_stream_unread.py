"""A streaming map nobody reads: the job lives as long as its handle and its
producer process do (the enqueuer waits for the reader, the enqueue lease is
renewed), and no longer. Its producer exiting cancels it (the handle's
finalizer runs at exit); its producer killed stops renewing the lease, and the
job ends ``abandoned`` once it lapses (``producer.lease``)."""

from __future__ import annotations

import signal
import subprocess
import sys

import redis

from producer import Client
from tests.helpers import wait_until
from tests.stdlib_futures.test_shutdown import REPO

SCRIPT = """if 1:
    import itertools, sys
    from producer import Client
    from tests import tasks
    client = Client.from_url(sys.argv[1], enqueue_lease=2)
    job = client.map(tasks.square, itertools.count(), stream=True, batch_size=1, window=2)
    print(job.id, flush=True)
    if sys.argv[2] == "wait":
        sys.stdin.read()  # until killed
"""


def _producer(redis_url: str, mode: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, redis_url, mode],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def test_an_unread_stream_is_cancelled_when_its_producer_exits(
    redis_url: str, r: redis.Redis
) -> None:
    proc, job_id = _producer(redis_url, "exit")
    assert proc.wait(timeout=60) == 0
    assert Client(r).job(job_id).status == "cancelled"


def test_an_unread_stream_lives_with_its_producer_and_is_abandoned_when_it_is_killed(
    redis_url: str, r: redis.Redis
) -> None:
    proc, job_id = _producer(redis_url, "wait")
    job = Client(r).job(job_id)
    try:
        # Alive, it keeps its job: the lease (2 s) is renewed though nobody reads.
        renewed = r.hget(job.keys.meta, "lease_until")
        wait_until(lambda: r.hget(job.keys.meta, "lease_until") != renewed, timeout=30)
        assert job.status == "enqueuing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    wait_until(lambda: job.status == "abandoned", timeout=30)
