"""``taskfan worker --rq-queue``: real nodes on real RQ queues.

Leases kept while jobs outlive them, a SIGKILLed node (no job lost), graceful
and cold stops, what taskfan refuses to run, crashes inside jobs, serializers,
several queues, a node serving taskfan and RQ queues at once, RQ's scheduler
duty and ``rq suspend``.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Callback, Queue, Retry, Worker
from rq.job import Job, JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.suspension import resume, suspend

from producer import Client
from taskfan.keys import node as node_key
from tests import rq_tasks, tasks
from tests.conftest import StartWorker
from tests.helpers import wait_until
from tests.workers import WorkerProcess

#: short leases, so that the tests see them lapse (heartbeat at most half of it)
FAST = {"TASKFAN_HEARTBEAT_INTERVAL": "0.5", "TASKFAN_VISIBILITY_TIMEOUT": "2"}


def status(client: redis.Redis, job_id: str) -> JobStatus:
    return Job.fetch(job_id, connection=client).get_status()


def all_ended(client: redis.Redis, ids: list[str]) -> bool:
    return all(
        status(client, i) in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.SCHEDULED)
        for i in ids
    )


def results(client: redis.Redis, job_id: str) -> list[Result]:
    """The job's results, oldest first."""
    return list(reversed(Job.fetch(job_id, connection=client).results()))


def rq_node(start_worker: StartWorker, *queues: str, **options: Any) -> WorkerProcess:
    args = [arg for name in queues for arg in ("--rq-queue", name)]
    return start_worker(*args, *options.pop("args", ()), queue=None, **options)


def assert_refused(
    redis_url: str, *args: str, says: str, env: dict[str, str] | None = None
) -> None:
    """An RQ node started with ``args`` exits at once, with one line that says ``says``."""
    node = WorkerProcess(redis_url, "--rq-queue", "q", *args, queue=None, env=env)
    try:
        assert node.wait(timeout=60) != 0
        assert says in node.log()
        assert "Traceback" not in node.log()
    finally:
        node.close()


def test_a_job_longer_than_its_lease_keeps_its_registry_entry(
    r: redis.Redis, start_worker: StartWorker
) -> None:
    """A 5 s job under a 2 s lease: the node's heartbeat renews the lease, so RQ's
    registry cleanup (which get_job_ids() runs) never takes the job for abandoned."""
    queue = Queue("lease", connection=r)
    registry = queue.started_job_registry
    job = queue.enqueue(rq_tasks.nap, 5)
    node = rq_node(start_worker, "lease", env=FAST, processes=1)
    wait_until(lambda: job.id in registry, message=node.log)
    member = f"{job.id}:{registry.get_job_and_execution_ids()[0][1]}"
    leases = {r.zscore(registry.key, member)}
    seen: dict[str, Any] = {}

    def running_or_done() -> bool:
        ids = registry.get_job_ids()  # RQ's cleanup: a lapsed lease would fail the job now
        if status(r, job.id) == JobStatus.FINISHED:
            return True
        assert ids == [job.id], node.log()
        leases.add(r.zscore(registry.key, member))
        (worker,) = Worker.all(connection=r)
        seen.update(state=worker.get_state(), current=worker.get_current_job_id())
        return False

    wait_until(running_or_done, timeout=30, interval=0.2, message=node.log)
    assert len(leases - {None}) >= 3  # renewed again and again
    assert [res.type for res in results(r, job.id)] == [Result.Type.SUCCESSFUL]
    assert seen == {"state": "busy", "current": job.id}


def test_a_killed_node_loses_no_job(r: redis.Redis, start_worker: StartWorker) -> None:
    """SIGKILL a node holding two started jobs and one dequeued, not started: a
    second node puts the unstarted one back (it never ran), and RQ's registry
    cleanup, which the node runs, fails the started ones as abandoned, or retries
    the one that has retries left."""
    queue = Queue("crash", connection=r)
    retried = queue.enqueue(rq_tasks.nap, 1.0, retry=Retry(max=1))
    abandoned = queue.enqueue(rq_tasks.nap, 1.0)
    unstarted = queue.enqueue(rq_tasks.nap, 0.1)
    rest = [queue.enqueue(rq_tasks.double, i) for i in range(5)]
    node = rq_node(start_worker, "crash", env=FAST, processes=1)
    registry = queue.started_job_registry

    def holding() -> bool:
        started = {job_id for job_id, _ in registry.get_job_and_execution_ids(cleanup=False)}
        listed: Any = r.lrange(queue.intermediate_queue_key, 0, -1)
        waiting = [i.decode() for i in listed]
        no_cleaning = not r.exists(queue.registry_cleaning_key)
        return started == {retried.id, abandoned.id} and waiting == [unstarted.id] and no_cleaning

    wait_until(holding, timeout=20, message=node.log)
    (killed,) = Worker.all(connection=r)
    os.kill(node.pid, signal.SIGKILL)
    node.wait()
    survivor = rq_node(start_worker, "crash", env=FAST)
    ids = [retried.id, abandoned.id, unstarted.id, *[j.id for j in rest]]
    wait_until(lambda: all_ended(r, ids), timeout=60, message=survivor.log)

    assert status(r, retried.id) == JobStatus.FINISHED
    assert [res.type for res in results(r, retried.id)] == [Result.Type.SUCCESSFUL]
    assert status(r, abandoned.id) == JobStatus.FAILED
    (failure,) = results(r, abandoned.id)
    assert failure.exc_string is not None and "AbandonedJobError" in failure.exc_string
    assert status(r, unstarted.id) == JobStatus.FINISHED
    assert len(results(r, unstarted.id)) == 1  # it ran once: on the survivor
    assert Job.fetch(unstarted.id, connection=r).worker_name not in (None, killed.name)
    assert all(status(r, j.id) == JobStatus.FINISHED for j in rest)
    assert r.llen(queue.intermediate_queue_key) == 0
    assert registry.get_job_count() == 0
    assert "went back to the queue" in survivor.log()


def test_a_stopping_node_finishes_what_runs_and_hands_the_rest_back(
    r: redis.Redis, start_worker: StartWorker
) -> None:
    queue = Queue("stop", connection=r)
    running = [queue.enqueue(rq_tasks.nap, 1.0) for _ in range(2)]
    waiting = [queue.enqueue(rq_tasks.double, i) for i in range(3)]
    node = rq_node(start_worker, "stop", env=FAST, processes=1)
    wait_until(
        lambda: r.llen(queue.intermediate_queue_key) == 1 and queue.count == 2,
        message=node.log,
    )
    assert node.stop() == 0
    assert [status(r, j.id) for j in running] == [JobStatus.FINISHED] * 2
    assert queue.job_ids == [j.id for j in waiting]  # the unstarted one first, in order
    assert [status(r, j.id) for j in waiting] == [JobStatus.QUEUED] * 3
    assert r.llen(queue.intermediate_queue_key) == 0
    assert queue.started_job_registry.get_job_count() == 0
    assert Worker.all(connection=r) == []  # registered its death


def test_a_cold_stop_fails_running_jobs_through_rqs_failure_path(
    r: redis.Redis, start_worker: StartWorker
) -> None:
    queue = Queue("cold", connection=r)
    plain = queue.enqueue(rq_tasks.nap, 30)
    with_retry = queue.enqueue(rq_tasks.nap, 30, retry=Retry(max=1))
    node = rq_node(start_worker, "cold", env=FAST, processes=1, args=["--grace-period", "0.5"])
    wait_until(lambda: queue.started_job_registry.get_job_count() == 2, message=node.log)
    assert node.stop(timeout=30) == 0
    assert status(r, plain.id) == JobStatus.FAILED
    (failure,) = results(r, plain.id)
    assert failure.exc_string is not None and "taskfan.NodeStopped" in failure.exc_string
    assert status(r, with_retry.id) == JobStatus.QUEUED  # RQ's retry: back in the queue
    assert queue.job_ids == [with_retry.id]
    assert queue.started_job_registry.get_job_count() == 0


def test_what_taskfan_does_not_run_fails_with_the_reason(
    r: redis.Redis, start_worker: StartWorker
) -> None:
    queue = Queue("refused", connection=r)
    callback = queue.enqueue(rq_tasks.double, 1, on_success=Callback(rq_tasks.on_success))
    meta = queue.enqueue(rq_tasks.save_meta)
    crash = queue.enqueue(tasks.crash)
    fine = [queue.enqueue(rq_tasks.double, i) for i in range(4)]
    node = rq_node(start_worker, "refused", args=["--burst"])
    assert node.wait(timeout=60) == 0, node.log()

    assert status(r, callback.id) == JobStatus.FAILED
    assert Job.fetch(callback.id, connection=r).started_at is None  # it never ran
    (refused,) = results(r, callback.id)
    assert refused.exc_string is not None
    assert "taskfan.UnsupportedRQJob" in refused.exc_string and "on_success" in refused.exc_string
    (no_redis,) = results(r, meta.id)
    assert no_redis.exc_string is not None and "no Redis connection" in no_redis.exc_string
    (died,) = results(r, crash.id)
    assert died.exc_string is not None
    assert "WorkerProcessDied: worker process died: signal 11 (SIGSEGV)" in died.exc_string
    assert [Job.fetch(j.id, connection=r).return_value() for j in fine] == [0, 2, 4, 6]
    assert "UnsupportedRQJob" in node.log()


def test_the_queues_serializer(r: redis.Redis, start_worker: StartWorker) -> None:
    queue = Queue("json", connection=r, serializer=JSONSerializer)
    job = queue.enqueue(rq_tasks.echo, {"a": [1, 2]})
    node = rq_node(start_worker, "json", args=["--rq-serializer", "json", "--burst"])
    assert node.wait(timeout=60) == 0, node.log()
    fetched = Job.fetch(job.id, connection=r, serializer=JSONSerializer)
    assert fetched.return_value() == {"a": [1, 2]}


def test_a_bad_serializer_is_one_line(redis_url: str) -> None:
    assert_refused(
        redis_url, "--rq-serializer", "no.such.Thing", says="Error: RQ serializer 'no.such.Thing'"
    )


def test_several_queues_and_taskfan_queues_beside(
    r: redis.Redis, redis_url: str, start_worker: StartWorker
) -> None:
    high, low = Queue("high", connection=r), Queue("low", connection=r)
    jobs = [low.enqueue(rq_tasks.double, 1), high.enqueue(rq_tasks.double, 2)]
    node = start_worker("--rq-queue", "high", "--rq-queue", "low", queue="tf")
    client = Client.from_url(redis_url, "tf")
    assert list(client.map(tasks.square, [1, 2, 3]).results(timeout=60)) == [1, 4, 9]
    wait_until(lambda: all_ended(r, [j.id for j in jobs]), message=node.log)
    assert [Job.fetch(j.id, connection=r).return_value() for j in jobs] == [2, 4]
    record = r.hgetall(node_key(Worker.all(connection=r)[0].name))
    assert json.loads(record[b"queues"]) == ["tf"]
    assert json.loads(record[b"rq_queues"]) == ["high", "low"]


def test_the_scheduler_duty_brings_retries_back(
    r: redis.Redis, start_worker: StartWorker, tmp_path: Path
) -> None:
    queue = Queue("later", connection=r)
    job = queue.enqueue(rq_tasks.fail_once, str(tmp_path / "flag"), retry=Retry(max=1, interval=1))
    node = rq_node(start_worker, "later", args=["--rq-with-scheduler"])
    wait_until(lambda: status(r, job.id) == JobStatus.FINISHED, timeout=30, message=node.log)
    assert Job.fetch(job.id, connection=r).return_value() == "second attempt"


def test_rq_suspend_holds_the_node_back(r: redis.Redis, start_worker: StartWorker) -> None:
    queue = Queue("held", connection=r)
    suspend(r)
    job = queue.enqueue(rq_tasks.double, 1)
    node = rq_node(start_worker, "held", env=FAST)
    name = wait_until(lambda: Worker.all(connection=r), message=node.log)[0].name
    beats = wait_until(lambda: r.hget(node_key(name), "heartbeat_at"), message=node.log)
    wait_until(lambda: r.hget(node_key(name), "heartbeat_at") != beats, message=node.log)
    assert queue.job_ids == [job.id] and status(r, job.id) == JobStatus.QUEUED
    resume(r)
    wait_until(lambda: status(r, job.id) == JobStatus.FINISHED, timeout=20, message=node.log)


def test_a_node_with_a_secret_refuses_pickled_rq_queues(redis_url: str) -> None:
    env = {"TASKFAN_SECRET": "s3cret-s3cret-s3cret"}
    assert_refused(redis_url, says="RQ jobs are not signed", env=env)


def test_rq_jobs_that_exit_fail_alone(r: redis.Redis, start_worker: StartWorker) -> None:
    """sys.exit() in an RQ job, or a return value whose pickling raises SystemExit,
    is that job's outcome; the node drains the rest and exits 0."""
    queue = Queue("hostile", connection=r)
    exits = queue.enqueue(tasks.hostile, tasks.SYS_EXIT)
    unpicklable = queue.enqueue(tasks.hostile, tasks.PICKLE_EXITS)
    fine = [queue.enqueue(tasks.hostile, i) for i in range(3)]
    node = rq_node(start_worker, "hostile", args=["--burst"], processes=1)
    assert node.wait(timeout=60) == 0, node.log()
    assert status(r, exits.id) == JobStatus.FAILED
    (failed,) = results(r, exits.id)
    assert failed.exc_string is not None and "SystemExit" in failed.exc_string
    assert status(r, unpicklable.id) == JobStatus.FINISHED  # as RQ: a placeholder value
    assert "Unserializable" in str(Job.fetch(unpicklable.id, connection=r).return_value())
    assert [Job.fetch(j.id, connection=r).return_value() for j in fine] == [0, 1, 4]


def test_rate_limited_jobs_free_their_slot_as_rqs_worker_does(
    r: redis.Redis, start_worker: StartWorker
) -> None:
    """RQ 3's rate limits: at most ``concurrency`` jobs of a key are queued or running;
    each that ends frees its slot and lets the next one in (RQ's own code records
    them: RqJob.fast). Skipped with RQ 2, which has none."""
    rate_limit = pytest.importorskip("rq.rate_limit", reason="rate limits are RQ 3's")
    queue = Queue("limited", connection=r)
    limit = rate_limit.RateLimit("taskfan-test", 1)
    jobs = [queue.enqueue(rq_tasks.double, i, rate_limit=limit) for i in range(4)]
    jobs.append(queue.enqueue(rq_tasks.boom, 1, rate_limit=limit))
    assert queue.count == 1  # the others wait for the slot
    ids = [job.id for job in jobs]
    node = rq_node(start_worker, "limited", env=FAST, processes=1)
    wait_until(lambda: all_ended(r, ids), timeout=60, message=node.log)
    assert [status(r, i) for i in ids] == [JobStatus.FINISHED] * 4 + [JobStatus.FAILED]
    assert [Job.fetch(i, connection=r).return_value() for i in ids[:4]] == [0, 2, 4, 6]
    registry = rate_limit.RateLimitRegistry("taskfan-test", connection=r)
    assert not r.exists(registry.allowed_key) and not r.exists(registry.rate_limited_key)


def test_a_job_hash_with_garbage_fails_alone_and_its_batch_is_recorded(
    r: redis.Redis, start_worker: StartWorker
) -> None:
    """A job hash someone wrote garbage into (a result_ttl or repeats_left that
    is not a number, which RQ's own Job.fetch cannot parse) is that job's
    problem: the other jobs dequeued with it, run or refused, are recorded."""
    queue = Queue("garbled", connection=r)
    before = [queue.enqueue(rq_tasks.double, i) for i in range(3)]
    ttl = queue.enqueue(rq_tasks.double, 10)
    r.hset(f"rq:job:{ttl.id}", "result_ttl", b"\xff\xfe")
    huge = queue.enqueue(rq_tasks.double, 13)  # a number, past what EXPIRE takes
    r.hset(f"rq:job:{huge.id}", "result_ttl", b"9" * 40)
    repeats = queue.enqueue(rq_tasks.double, 11)
    r.hset(f"rq:job:{repeats.id}", "repeats_left", b"\xff\xfe")
    callback = queue.enqueue(rq_tasks.double, 12, on_success=Callback(rq_tasks.on_success))
    after = [queue.enqueue(rq_tasks.double, i) for i in range(3, 6)]
    node = rq_node(start_worker, "garbled", args=["--burst"])
    assert node.wait(timeout=60) == 0, node.log()
    values = [Job.fetch(j.id, connection=r).return_value() for j in before + after]
    assert values == [0, 2, 4, 6, 8, 10], node.log()
    assert status(r, callback.id) == JobStatus.FAILED, node.log()
    log = node.log()
    assert ttl.id in log and repeats.id in log
    assert "recording RQ jobs failed; they are left to RQ's cleanup" not in log
