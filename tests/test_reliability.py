"""Failures end to end: killed nodes, cold stops, cancels, delivery limits, timeouts, retries."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client
from producer.ops.admin import purge
from taskfan.errors import JobCancelled, TaskfanError
from taskfan.keys import GROUP, JobKeys, QueueKeys
from tests import tasks
from tests.conftest import StartWorker
from tests.helpers import wait_until

FAST_LEASES = {"TASKFAN_VISIBILITY_TIMEOUT": "2", "TASKFAN_HEARTBEAT_INTERVAL": "0.5"}


def pending(r: redis.Redis) -> int:
    try:
        return int(r.xpending(QueueKeys("default").stream, GROUP)["pending"])
    except redis.ResponseError:  # no group yet: no node has started
        return 0


def one_outcome_each(r: redis.Redis, client: Client, job_id: str, total: int) -> None:
    job = client.job(job_id)
    meta = job.meta()
    assert (meta.total, meta.done, meta.batches_done) == (total, total, meta.batches)
    assert r.hlen(JobKeys(job_id).results) == meta.batches
    assert [o.index for o in job.outcomes()] == list(range(total))


@pytest.mark.cluster
def test_a_killed_node_s_batches_are_reclaimed(
    start_worker: StartWorker, client: Client, r: redis.Redis
) -> None:
    doomed = start_worker(env=FAST_LEASES)
    job = client.map(tasks.sleep, [0.05] * 120, batch_size=6)
    wait_until(lambda: job.progress().done >= 12, timeout=60, message="some batches done")
    doomed.signal(signal.SIGKILL)
    doomed.wait()
    start_worker(env=FAST_LEASES)
    assert job.wait(timeout=120)
    one_outcome_each(r, client, job.id, 120)


@pytest.mark.cluster
def test_a_cold_stop_hands_batches_back_at_once(
    start_worker: StartWorker, client: Client, r: redis.Redis, tmp_path: Path
) -> None:
    # Leases last 60 s: the job can only finish in time if the batches come back at once.
    slow_leases = {"TASKFAN_VISIBILITY_TIMEOUT": "60", "TASKFAN_HEARTBEAT_INTERVAL": "0.5"}
    first = start_worker(processes=1, env=slow_leases)
    # Items that run until released: the first node's graceful stop cannot end before
    # the second SIGTERM (a process already exiting would die of it, Python having
    # restored SIG_DFL), as it could when the node held a batch it had not started.
    counter, release = tmp_path / "calls", tmp_path / "release"
    job = client.map(tasks.count_until, [(str(counter), str(release))] * 6, star=True,
                     batch_size=2)  # fmt: skip
    wait_until(counter.exists, timeout=30, message="the first node runs an item")
    first.signal(signal.SIGTERM)
    wait_until(lambda: "finishing the batches in flight" in first.log(), timeout=10,
               message="the first SIGTERM is handled")  # fmt: skip
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    assert "cold stop" in first.log()
    release.touch()
    start_worker(processes=2, env=slow_leases)
    assert job.wait(timeout=30)
    one_outcome_each(r, client, job.id, 6)


@pytest.mark.cluster
def test_cancel_skips_queued_batches_and_wakes_waiters(
    start_worker: StartWorker, client: Client
) -> None:
    worker = start_worker(processes=1)
    job = client.map(tasks.sleep, [0.05] * 200, batch_size=2)
    wait_until(lambda: job.progress().done >= 2, timeout=60, message="first batches done")
    assert job.cancel()
    assert not job.cancel()  # already ended
    with pytest.raises(JobCancelled):
        job.wait(timeout=10)
    with pytest.raises(JobCancelled):
        list(job.results())
    assert job.status == "cancelled"
    # The node skips the rest and carries on with other jobs.
    assert list(client.map(tasks.square, [3]).results(timeout=60)) == [9]
    wait_until(lambda: "skipped: the job was cancelled" in worker.log(), timeout=30,
               message="the node skipped a cancelled batch")  # fmt: skip
    assert job.progress().done < 200


@pytest.mark.cluster
def test_a_batch_delivered_too_often_goes_to_the_dead_letters(
    start_worker: StartWorker, client: Client, r: redis.Redis
) -> None:
    queue = QueueKeys("default")
    r.xgroup_create(queue.stream, GROUP, id="0", mkstream=True)
    job = client.map(tasks.square, [1, 2, 3], batch_size=3)
    # Two nodes took the batch and died with it.
    read: Any = r.xreadgroup(GROUP, "ghost-1", {queue.stream: ">"})
    ((_, [(entry_id, _)]),) = read
    r.xclaim(queue.stream, GROUP, "ghost-2", 0, [entry_id])
    start_worker(env={**FAST_LEASES, "TASKFAN_MAX_DELIVERIES": "2"})
    assert job.wait(timeout=60)
    outcomes = list(job.outcomes())
    assert [o.ok for o in outcomes] == [False, False, False]
    assert all(o.error and o.error.type == "DeliveryLimit" for o in outcomes)
    # The node records a batch's results, then dead-letters (or acknowledges) it.
    dead: Any = wait_until(lambda: r.xrange(queue.dead), timeout=10, message="the dead letter")
    ((_, fields),) = dead
    assert b"max_deliveries=2" in fields[b"reason"]
    assert fields[b"j"] == job.id.encode()
    assert r.xlen(queue.stream) == 0


@pytest.mark.cluster
def test_soft_and_hard_timeouts_fail_only_their_item(
    start_worker: StartWorker, client: Client
) -> None:
    start_worker()
    soft = client.map(tasks.spin_on, range(6), timeout=0.5)
    hard = client.map(tasks.spin_on, range(6), hard_timeout=1.0)
    for job, kind in ((soft, "SoftTimeout"), (hard, "HardTimeout")):
        outcomes = list(job.outcomes(timeout=60))
        assert [o.ok for o in outcomes] == [True, True, True, False, True, True], kind
        assert outcomes[3].error is not None and outcomes[3].error.type == kind
        assert [o.value for o in outcomes if o.ok] == [0, 1, 2, 4, 5]


@pytest.mark.cluster
def test_retries_record_their_attempts(
    start_worker: StartWorker, client: Client, tmp_path: Path
) -> None:
    start_worker()
    flaky = client.map(tasks.fail_times, [(str(tmp_path / f"c{i}"), 2) for i in range(4)],
                       star=True, retries=3, retry_on=[ConnectionError], backoff=0.01)  # fmt: skip
    outcomes = list(flaky.outcomes(timeout=60))
    assert [(o.ok, o.attempts) for o in outcomes] == [(True, 3)] * 4
    limited = client.map(
        tasks.fail_times, [(str(tmp_path / "d"), 5)], star=True, retries=1, backoff=0.01
    )
    (outcome,) = limited.outcomes(timeout=60)
    assert (outcome.ok, outcome.attempts) == (False, 2)
    not_listed = client.map(tasks.fail, [1], retries=3, retry_on=["ConnectionError"])
    (outcome,) = not_listed.outcomes(timeout=60)
    assert (outcome.ok, outcome.attempts) == (False, 1)


# Not on the cluster: KEYS and INFO memory would see one node of three.
def test_finished_jobs_expire_and_memory_returns_to_its_baseline(
    start_worker: StartWorker, redis_url: str, r: redis.Redis
) -> None:
    start_worker()
    client = Client.from_url(redis_url, result_ttl=1)

    def run_and_expire(items: int) -> None:
        job = client.map(tasks.square, range(items), batch_size=100)
        assert job.wait(timeout=60)
        assert all(r.ttl(key) > 0 for key in JobKeys(job.id).all())
        wait_until(lambda: not any(r.exists(key) for key in JobKeys(job.id).all()), timeout=10,
                   message="the job's keys expired")  # fmt: skip

    run_and_expire(100)  # the queue, its group and the node record now exist
    keys_before = set(r.keys("*"))
    memory_before = int(r.info("memory")["used_memory"])
    run_and_expire(20_000)
    assert set(r.keys("*")) == keys_before
    assert r.xlen(QueueKeys("default").stream) == 0  # acknowledged entries are deleted
    memory_after = int(r.info("memory")["used_memory"])
    # The 20,000-item job took about 150 KB while its keys lived. What stays is allocator
    # and client-buffer noise (about 25 KB here); a leak of 4 bytes per item would show.
    assert memory_after - memory_before < 64 * 1024, (memory_before, memory_after)


@pytest.mark.cluster
def test_a_node_survives_its_queue_being_deleted_under_it(
    start_worker: StartWorker, client: Client, r: redis.Redis
) -> None:
    worker = start_worker()
    assert list(client.map(tasks.square, [2]).results(timeout=60)) == [4]
    # The node is now blocked reading the stream; delete it (as FLUSHALL or a purge would).
    r.delete(QueueKeys("default").stream)
    wait_until(lambda: "creating it again" in worker.log(), timeout=30,
               message="the node noticed its stream vanished")  # fmt: skip
    assert list(client.map(tasks.square, [3]).results(timeout=60)) == [9]
    assert worker.proc.poll() is None


@pytest.mark.cluster
def test_purge_drops_queued_batches_and_cancels_their_jobs(
    start_worker: StartWorker, client: Client, r: redis.Redis
) -> None:
    first = client.map(tasks.square, [1, 2], batch_size=2)
    waiting = client.map(tasks.square, range(100), batch_size=10)
    purged = purge(r, "default")
    assert (purged.entries, purged.jobs_cancelled) == (11, 2)
    assert r.exists(QueueKeys("default").stream) == 0
    with pytest.raises(JobCancelled):
        waiting.wait(timeout=5)
    # Nodes carry on: the group is created again and new jobs run.
    start_worker()
    assert list(client.map(tasks.square, [4]).results(timeout=60)) == [16]
    assert first.status == "cancelled"


@pytest.mark.cluster
def test_retry_failed_reruns_only_the_failed_items_in_place(
    start_worker: StartWorker, client: Client, r: redis.Redis, tmp_path: Path
) -> None:
    start_worker()
    # Items 3 and 7 fail once; item 5 fails three times.
    fails = {3: 1, 5: 3, 7: 1}
    items = [(str(tmp_path / f"c{i}"), fails.get(i, 0)) for i in range(10)]
    job = client.map(tasks.fail_times, items, star=True, batch_size=4)
    assert job.wait(timeout=60)
    assert job.progress() == (10, 3, 10)
    with pytest.raises(TaskfanError, match="only a finished job"):
        client.map(tasks.sleep, [1.0]).retry_failed()

    assert job.retry_failed() == 3
    assert job.wait(timeout=60)
    assert job.progress() == (10, 1, 10)
    outcomes = list(job.outcomes())
    assert [o.index for o in outcomes] == list(range(10))
    assert [(o.index, o.attempts) for o in outcomes if o.attempts > 1] == [(3, 2), (5, 2), (7, 2)]
    assert [o.index for o in outcomes if not o.ok] == [5]
    assert [o.value for o in outcomes if o.ok] == [1, 1, 1, 2, 1, 1, 2, 1, 1]

    assert job.retry_failed() == 1  # a second round: item 5's third failure
    assert job.wait(timeout=60)
    assert job.retry_failed() == 1
    assert job.wait(timeout=60)
    assert job.progress() == (10, 0, 10)
    assert list(job.results())[5] == 4  # the fourth call succeeds
    assert {o.index: o.attempts for o in job.outcomes()}[5] == 4

    def left() -> list[Any]:
        entries: Any = r.xrange(QueueKeys("default").stream)
        return [e for _, e in entries if e[b"j"] == job.id.encode()]

    wait_until(lambda: not left(), timeout=10, message="the retries' entries acknowledged")


@pytest.mark.cluster
def test_a_stopping_node_hands_back_what_it_has_not_started_and_what_outlives_its_grace(
    start_worker: StartWorker, client: Client, r: redis.Redis
) -> None:
    # Leases last 60 s: the job only finishes in time if batches come back at once.
    env = {"TASKFAN_VISIBILITY_TIMEOUT": "60", "TASKFAN_HEARTBEAT_INTERVAL": "0.5",
           "TASKFAN_GRACE_PERIOD": "1"}  # fmt: skip
    first = start_worker(processes=1, env=env)
    # One item of 30 s (far past the grace period), then quick ones. With one
    # process the node puts two chunks in its pool (the 30 s one runs, the next
    # waits behind it) and reads one batch more, which it has not started.
    job = client.map(tasks.sleep, [30.0] + [0.01] * 9, batch_size=1, chunksize=1)
    wait_until(lambda: pending(r) >= 3, timeout=30, message="the node holds three batches")
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0
    log = first.log()
    assert "grace period of 1.0s over" in log, log
    assert "unfinished batches back" in log, log
    start_worker(processes=2, env={**env, "TASKFAN_GRACE_PERIOD": "30"})
    wait_until(lambda: job.progress().done == 9, timeout=30,
               message="the quick items ran elsewhere before their leases lapsed")  # fmt: skip
    assert job.cancel()  # no need to wait for the 30 s item


def test_a_node_that_reclaims_a_batch_it_still_runs_does_not_run_it_twice(
    start_worker: StartWorker, client: Client, r: redis.Redis, tmp_path: Path
) -> None:
    # A node's heartbeats can stall past the visibility timeout (a paused VM, a
    # swapped-out process); its own XAUTOCLAIM then hands it an entry it holds.
    leases = {"TASKFAN_VISIBILITY_TIMEOUT": "2", "TASKFAN_HEARTBEAT_INTERVAL": "1"}
    worker = start_worker(processes=1, env=leases)
    counter, release = tmp_path / "calls", tmp_path / "release"
    job = client.map(tasks.count_until, [(str(counter), str(release))], star=True)
    wait_until(counter.exists, timeout=30, message="the item running")
    stream = QueueKeys("default").stream

    def lapsed_and_reclaimed() -> bool:
        for pending in r.xpending_range(stream, GROUP, "-", "+", 10):
            # the node still owns the entry, but its lease looks lapsed
            owner = pending["consumer"]
            assert isinstance(owner, bytes)
            r.xclaim(stream, GROUP, owner, 0, [pending["message_id"]], idle=60_000, justid=True)
        return "not running it twice" in worker.log()

    wait_until(lapsed_and_reclaimed, timeout=30, message=lambda: worker.log())
    release.write_text("go")
    assert job.wait(timeout=30)
    assert list(job.results()) == [1]
    assert counter.read_text() == "1"  # the item ran once
    assert worker.stop() == 0
