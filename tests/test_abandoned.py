"""A producer killed mid-enqueue leaves no orphaned job (issue 14, item 2).

While a job is unsealed its producer renews an enqueue lease (``producer.lease``);
when the producer dies the lease lapses, a node's heartbeat (or any reader) ends
the job ``abandoned``, nodes skip its remaining batches, and its keys expire. A
producer that is merely slow keeps its job alive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client, Executor, events
from taskfan import scripts
from taskfan.errors import ConfigError, JobAbandoned, JobCancelled
from taskfan.keys import GROUP, JobKeys, QueueKeys
from taskfan.settings import Settings
from tests import tasks
from tests.cli_support import invoke
from tests.conftest import StartWorker
from tests.helpers import wait_until
from tests.workers import REPO

#: a node that checks leases and reclaims often
FAST_NODE = {"TASKFAN_HEARTBEAT_INTERVAL": "0.5", "TASKFAN_VISIBILITY_TIMEOUT": "2"}

PRODUCER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from producer import Client
    from tests import tasks

    marker = Path(sys.argv[1])

    def items():
        for i in range(40):
            yield 0.2
        marker.write_text("half")   # 40 items taken: two pipelines of 16 sent
        time.sleep(3600)            # ... and then it hangs until it is killed
        yield 0.2

    Client.from_env().map(tasks.sleep, items(), batch_size=1)
    """
)


def start_producer(
    redis_url: str, tmp_path: Path, lease: float
) -> tuple[subprocess.Popen[bytes], Path]:
    marker = tmp_path / "half"
    env = {
        **os.environ,
        "TASKFAN_REDIS_URL": redis_url,
        "TASKFAN_ENQUEUE_LEASE": str(lease),
        "PYTHONPATH": str(REPO),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, str(marker)],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        # its own handlers: SIGKILL needs none, but it must not inherit SIG_IGN for SIGINT
        start_new_session=True,
    )
    return proc, marker


def only_job(r: redis.Redis) -> str:
    jobs: list[bytes] = r.zrange(QueueKeys("default").jobs, 0, -1)  # type: ignore[assignment]
    assert len(jobs) == 1, jobs
    return jobs[0].decode()


@pytest.fixture
def producer_killed_mid_enqueue(redis_url: str, tmp_path: Path, r: redis.Redis) -> Iterator[str]:
    proc, marker = start_producer(redis_url, tmp_path, lease=2.0)
    try:
        wait_until(marker.exists, timeout=30, message="the producer to send half its items")
        job_id = only_job(r)
        meta = JobKeys(job_id).meta
        wait_until(lambda: int(r.hget(meta, "batches") or 0) >= 16)  # the second pipeline
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        yield job_id
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_producer_killed_mid_enqueue_leaves_an_abandoned_job_whose_keys_expire(
    producer_killed_mid_enqueue: str, start_worker: StartWorker, client: Client, r: redis.Redis
) -> None:
    job_id = producer_killed_mid_enqueue
    node = start_worker(processes=1, env=FAST_NODE)
    keys = JobKeys(job_id)
    assert r.hget(keys.meta, "sealed") == b"0"
    wait_until(
        lambda: r.hget(keys.meta, "state") == b"abandoned",
        timeout=20,
        message=lambda: f"the job to be abandoned; node log:\n{node.log()}",
    )
    assert r.ttl(keys.meta) > 0  # the result TTL, not for ever
    for key in keys.all():
        # Each key the job has expires; results may not exist yet (a loaded machine:
        # the lease lapsed before the node recorded a batch).
        assert r.ttl(key) > 0 or r.ttl(key) == -2, key
    assert client.job(job_id).status == "abandoned"
    with pytest.raises(JobAbandoned, match="abandoned"):
        client.job(job_id).wait(timeout=5)
    with pytest.raises(JobCancelled):  # code that handles a cancelled job handles this one
        list(client.job(job_id).results(timeout=5))
    # Its remaining batches are skipped (acknowledged unrun), counted by the node.
    stream = QueueKeys("default").stream
    wait_until(lambda: r.xlen(stream) == 0, timeout=20, message=node.log)
    assert r.xpending(stream, GROUP)["pending"] == 0
    # Every batch sent was either run or skipped, by the node's own counts (a
    # batch running when the job ended is run, and its record refused).
    record = wait_until(
        lambda: _counts(r, "batches_done", "batches_skipped", total=32),
        timeout=10,
        message=lambda: str(r.hgetall(f"taskfan:node:{_node_id(r)}")),
    )
    assert record is not None
    assert record["batches_skipped"] > 0, "the abandoned job was run to its end"
    assert int(r.hget(keys.meta, "batches_done") or 0) <= record["batches_done"]
    assert "abandoned" in node.log()


def _counts(r: redis.Redis, *names: str, total: int) -> dict[str, int] | None:
    """The node record's counters ``names``, once they add up to ``total``."""
    record: dict[bytes, bytes] = r.hgetall(f"taskfan:node:{_node_id(r)}")  # type: ignore[assignment]
    counts = {name: int(record.get(name.encode(), b"0")) for name in names}
    return counts if sum(counts.values()) == total else None


def _node_id(r: redis.Redis) -> str:
    nodes: list[bytes] = r.zrange("taskfan:nodes", 0, -1)  # type: ignore[assignment]
    return nodes[0].decode()


def test_a_reader_ends_a_lapsed_job_when_no_node_saw_it(
    producer_killed_mid_enqueue: str, client: Client, r: redis.Redis
) -> None:
    """No node runs: the first reader after the lease ends the job itself."""
    job = client.job(producer_killed_mid_enqueue)
    wait_until(lambda: job.status == "abandoned", timeout=10)
    assert r.ttl(job.keys.meta) > 0
    events: list[Any] = r.xrange(job.keys.events)  # type: ignore[assignment]
    assert events[-1][1] == {b"end": b"abandoned"}


def test_a_slow_producer_keeps_its_job_alive(
    start_worker: StartWorker, redis_url: str, r: redis.Redis
) -> None:
    """A generator slower than the lease: the job lives and finishes whole."""
    start_worker(processes=1, env=FAST_NODE)
    client = Client.from_url(redis_url, enqueue_lease=1.0)
    taken: list[int] = []
    pause = threading.Event()

    def slowly() -> Iterator[int]:
        for i in range(40):
            if i in (17, 34):  # after a pipeline went out: the job exists, unsealed
                pause.wait(3.0)  # three leases without an item
            taken.append(i)
            yield i

    job = client.map(tasks.square, slowly(), batch_size=1)
    assert list(job.results(timeout=30)) == [i * i for i in range(40)]
    assert job.status == "finished"


def test_an_executor_keeps_its_shared_job_alive_while_it_lives(
    start_worker: StartWorker, redis_url: str, r: redis.Redis
) -> None:
    start_worker(processes=1, env=FAST_NODE)
    with Executor(Client.from_url(redis_url, enqueue_lease=1.0)) as executor:
        first = executor.submit(tasks.square, 3)
        assert first.result(timeout=30) == 9
        job_id = only_job(r)
        # Three leases later the open job is still alive, and takes more work.
        deadline = time.monotonic() + 3.0
        wait_until(lambda: time.monotonic() > deadline, timeout=5, interval=0.2)
        assert r.hget(JobKeys(job_id).meta, "state") == b"active"
        assert executor.submit(tasks.square, 4).result(timeout=30) == 16
    assert r.hget(JobKeys(job_id).meta, "state") == b"finished"


def test_the_lease_scripts_in_the_servers_clock(r: redis.Redis) -> None:
    keys = JobKeys("leased")
    r.hset(keys.meta, mapping={"state": "active", "sealed": "0", "result_ttl": "60"})
    r.hset(keys.results, "0", b"an entry")
    assert scripts.abandon_if_lapsed(r, keys) == "enqueuing"  # no lease: never abandoned
    assert scripts.renew_lease(r, keys, 1.0) == 1
    assert scripts.abandon_if_lapsed(r, keys) == "enqueuing"
    r.hset(keys.meta, "lease_until", "1.0")  # long past
    assert scripts.abandon_if_lapsed(r, keys) == "abandoned"
    assert scripts.abandon_if_lapsed(r, keys) == "abandoned"  # idempotent: one end event
    events: list[Any] = r.xrange(keys.events)  # type: ignore[assignment]
    assert [f for _, f in events] == [{b"end": b"abandoned"}]
    assert scripts.renew_lease(r, keys, 1.0) == scripts.JOB_ABANDONED
    assert scripts.seal_job(r, keys, 3, 3, time.time()) == scripts.JOB_ABANDONED
    assert all(r.ttl(key) > 0 for key in keys.all())
    assert scripts.abandon_if_lapsed(r, JobKeys("missing")) == "gone"


def test_the_lease_is_bounded() -> None:
    with pytest.raises(ConfigError, match="enqueue_lease"):
        Settings(enqueue_lease=0.1)
    with pytest.raises(ConfigError, match="TASKFAN_ENQUEUE_LEASE"):
        Settings.from_env({"TASKFAN_ENQUEUE_LEASE": "1e9"})
    assert Settings.from_env({"TASKFAN_ENQUEUE_LEASE": "5"}).enqueue_lease == 5.0


def test_the_cli_shows_an_abandoned_job_and_ends_a_lapsed_one(
    producer_killed_mid_enqueue: str, redis_url: str, r: redis.Redis
) -> None:
    """``taskfan jobs`` ends the lapsed job it lists (no node ever saw it); ``status``,
    ``inspect`` and ``wait`` say abandoned; ``wait`` exits 4, as for a cancelled job."""
    job_id = producer_killed_mid_enqueue
    keys = JobKeys(job_id)
    wait_until(lambda: float(r.hget(keys.meta, "lease_until") or 0) < time.time(), timeout=10)
    listed = invoke("jobs", "--state", "abandoned", "--redis-url", redis_url)
    assert job_id in listed.stdout, listed.stdout
    assert r.hget(keys.meta, "state") == b"abandoned"
    for command in ("status", "inspect"):
        shown = invoke(command, job_id, "--redis-url", redis_url)
        assert "abandoned" in shown.stdout, (command, shown.stdout)
    waited = invoke("wait", job_id, "--timeout", "5", "--redis-url", redis_url)
    assert waited.exit_code == 4
    assert "abandoned" in waited.stderr


def test_a_dead_letter_of_an_abandoned_job_is_not_requeued(r: redis.Redis) -> None:
    """It is not 'still being enqueued, try again': it will never be sealed."""
    keys = JobKeys("gone-producer")
    r.hset(keys.meta, mapping={"state": "abandoned", "sealed": "0"})
    assert scripts.prepare_requeue_round(r, keys, "1-0", 0, 3, 0) == -2


def test_a_waiter_learns_of_the_abandonment_itself_when_no_node_saw_the_job(
    producer_killed_mid_enqueue: str, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting from before the lease lapsed, with no node: the waiter's own quiet
    slices end the job, and it gets JobAbandoned, not a wait for ever."""
    monkeypatch.setattr(events, "BLOCK_SLICE", 0.3)
    job = client.job(producer_killed_mid_enqueue)
    began = time.monotonic()
    with pytest.raises(JobAbandoned):
        job.wait(timeout=20)
    assert time.monotonic() - began < 10


EXECUTOR = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from producer import Executor
    from tests import tasks

    executor = Executor()
    executor.submit(tasks.square, 3)
    Path(sys.argv[1]).write_text("submitted")
    time.sleep(3600)  # the executor lives on, its job open, until it is killed
    """
)


def test_an_executor_killed_leaves_its_open_job_abandoned(
    redis_url: str, tmp_path: Path, client: Client, r: redis.Redis
) -> None:
    marker = tmp_path / "submitted"
    env = {**os.environ, "TASKFAN_REDIS_URL": redis_url, "TASKFAN_ENQUEUE_LEASE": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-c", EXECUTOR, str(marker)],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(marker.exists, timeout=30, message="the executor to submit")
        job_id = only_job(r)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    job = client.job(job_id)
    assert job.status == "enqueuing"  # unsealed: submit calls may still come
    wait_until(lambda: job.status == "abandoned", timeout=10)
    assert all(r.ttl(key) != -1 for key in job.keys.all())  # none kept for ever
    assert r.ttl(job.keys.meta) > 0
