"""Contract tests: the same RQ jobs, run by RQ's own SimpleWorker and by a taskfan
node, leave the same observable state in Redis.

Each side gets its own database of the session's redis-server: RQ's ``SimpleWorker.work(
burst=True)`` runs on database 1, ``taskfan worker --rq-queue ... --burst`` on
database 2, on jobs enqueued the same way with the same ids. Then every ``rq:*``
key of both (job hashes, Result streams, registries, the worker's hash, the
queue and its intermediate list, TTLs) is compared after normalizing what must
differ (``tests/rq_support.py``): times, execution ids, the worker's name and
process facts. Plus what RQ's API says: status, return values, latest results,
``rq info``'s counts.

These are the tests to rerun on another RQ release; CI runs them with RQ 2 and RQ 3.
"""

from __future__ import annotations

import base64
import pickle
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from rq import Queue, Retry
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.results import Result

from tests import rq_tasks
from tests.conftest import TestRedis
from tests.helpers import wait_until
from tests.rq_support import counts, db_url, run_rq_worker, snapshot
from tests.workers import WorkerProcess
from worker.sources.rq import adapter as rqa

QUEUE = "contract"
RQ_DB, TASKFAN_DB = 1, 2

#: job id -> how to enqueue it on a queue (every id names what the job shows)
JOBS: dict[str, Callable[[Queue], Any]] = {
    "ok-int": lambda q: q.enqueue(rq_tasks.double, 21, job_id="ok-int"),
    "ok-str": lambda q: q.enqueue(rq_tasks.echo, "text", job_id="ok-str"),
    "ok-nested": lambda q: q.enqueue(
        rq_tasks.echo, {"a": [1, 2.5, None], "b": (True, "x")}, job_id="ok-nested"
    ),
    "ok-none": lambda q: q.enqueue(rq_tasks.nothing, job_id="ok-none"),
    "ok-unpicklable": lambda q: q.enqueue(rq_tasks.unpicklable, job_id="ok-unpicklable"),
    "ok-kwargs-meta": lambda q: q.enqueue(
        rq_tasks.double,
        x=4,
        job_id="ok-kwargs-meta",
        meta={"owner": "me"},
        description="a description",
    ),
    "ok-method": lambda q: q.enqueue(rq_tasks.Adder(1).add, 2, job_id="ok-method"),
    "ok-async": lambda q: q.enqueue(rq_tasks.coroutine, 1, job_id="ok-async"),
    "ok-current-job": lambda q: q.enqueue(rq_tasks.whoami, job_id="ok-current-job"),
    "fail": lambda q: q.enqueue(rq_tasks.boom, 1, job_id="fail"),
    "timeout": lambda q: q.enqueue(rq_tasks.busy, 30, job_id="timeout", job_timeout=1),
    "result-ttl-0": lambda q: q.enqueue(rq_tasks.double, 1, job_id="result-ttl-0", result_ttl=0),
    "result-ttl-keep": lambda q: q.enqueue(
        rq_tasks.double, 2, job_id="result-ttl-keep", result_ttl=-1
    ),
    "result-ttl-100": lambda q: q.enqueue(
        rq_tasks.double, 3, job_id="result-ttl-100", result_ttl=100
    ),
    "failure-ttl-100": lambda q: q.enqueue(
        rq_tasks.boom, 2, job_id="failure-ttl-100", failure_ttl=100
    ),
    "failure-ttl-keep": lambda q: q.enqueue(
        rq_tasks.boom, 3, job_id="failure-ttl-keep", failure_ttl=-1
    ),
    "failure-ttl-0": lambda q: q.enqueue(rq_tasks.boom, 4, job_id="failure-ttl-0", failure_ttl=0),
    "ttl-not-expired": lambda q: q.enqueue(rq_tasks.double, 5, job_id="ttl-not-expired", ttl=300),
    "retry": lambda q: q.enqueue(rq_tasks.boom, 5, job_id="retry", retry=Retry(max=2)),
    "retry-interval": lambda q: q.enqueue(
        rq_tasks.boom, 6, job_id="retry-interval", retry=Retry(max=2, interval=[300, 600])
    ),
    "returns-retry": lambda q: q.enqueue(rq_tasks.ask_retry, 1, job_id="returns-retry"),
    "returns-retry-max": lambda q: q.enqueue(rq_tasks.always_retry, job_id="returns-retry-max"),
    "parent": lambda q: q.enqueue(rq_tasks.double, 6, job_id="parent"),
    "child": lambda q: q.enqueue(rq_tasks.double, 7, job_id="child", depends_on="parent"),
}


def enqueue(client: redis.Redis) -> Queue:
    """Every job of JOBS, plus one whose `ttl` runs out before any worker starts."""
    queue = Queue(QUEUE, connection=client)
    queue.enqueue(rq_tasks.double, 8, job_id="ttl-expired", ttl=1)
    for make in JOBS.values():
        make(queue)
    return queue


def settle(client: redis.Redis) -> None:
    """What RQ's own maintenance does next: take ids of jobs that no longer exist out
    of the intermediate list (RQ's worker leaves the expired job's id there)."""
    queue = Queue(QUEUE, connection=client)
    worker_stub: Any = None  # cleanup() uses the worker only for jobs that still exist
    IntermediateQueue(queue.key, client).cleanup(worker_stub, queue)


@pytest.fixture(scope="module")
def runs(redis_server: TestRedis) -> Iterator[tuple[redis.Redis, redis.Redis]]:
    """Both databases after both runs: (RQ's, taskfan's). Once for the module."""
    rq_url, tf_url = db_url(redis_server.url, RQ_DB), db_url(redis_server.url, TASKFAN_DB)
    rq_client, tf_client = redis.Redis.from_url(rq_url), redis.Redis.from_url(tf_url)
    for client in (rq_client, tf_client):
        client.flushdb()
        enqueue(client)
    for client in (rq_client, tf_client):
        wait_until(
            lambda c=client: not c.exists(Job.key_for("ttl-expired")),  # type: ignore[misc]
            timeout=10,
            message="the ttl=1 job to expire",
        )
    run_rq_worker(rq_url, [QUEUE], name="rq-side")
    node = WorkerProcess(
        tf_url, "--rq-queue", QUEUE, "--burst", "--name", "taskfan-side", queue=None
    )
    try:
        assert node.wait(timeout=120) == 0, node.log()
    finally:
        node.close()
    for client in (rq_client, tf_client):
        settle(client)
    yield rq_client, tf_client
    for client in (rq_client, tf_client):
        client.flushdb()
        client.close()


def test_the_same_keys_and_values_as_rqs_worker(runs: tuple[redis.Redis, redis.Redis]) -> None:
    rq_client, tf_client = runs
    ours = snapshot(tf_client, ["taskfan-side"])
    theirs = snapshot(rq_client, ["rq-side"])
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert ours[key] == theirs[key], key


def test_the_same_answers_from_rqs_api(runs: tuple[redis.Redis, redis.Redis]) -> None:
    rq_client, tf_client = runs
    assert counts(tf_client, QUEUE) == counts(rq_client, QUEUE)
    for job_id in JOBS:
        exists = Job.exists(job_id, connection=rq_client)
        assert Job.exists(job_id, connection=tf_client) == exists, job_id
        if not exists:
            continue  # result_ttl=0 and failure_ttl=0: deleted by both
        ours, theirs = (Job.fetch(job_id, connection=c) for c in (tf_client, rq_client))
        assert ours.get_status() == theirs.get_status(), job_id
        assert ours.return_value() == theirs.return_value(), job_id
        assert ours.worker_name == "taskfan-side" and theirs.worker_name == "rq-side", job_id
        assert bool(ours.started_at) == bool(theirs.started_at), job_id
        assert bool(ours.ended_at) == bool(theirs.ended_at), job_id
        ours_results, theirs_results = ours.results(), theirs.results()
        assert [r.type for r in ours_results] == [r.type for r in theirs_results], job_id
        for mine, other in zip(ours_results, theirs_results, strict=True):
            assert _plain(mine.return_value) == _plain(other.return_value), job_id
            assert (mine.exc_string or "").splitlines()[-1:] == (
                other.exc_string or ""
            ).splitlines()[-1:], job_id


def rq_info(url: str) -> str:
    """What `rq info --raw` prints about the queue."""
    done = subprocess.run(
        [sys.executable, "-m", "rq.cli", "info", "--raw", "--url", url, QUEUE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_the_same_rq_info(runs: tuple[redis.Redis, redis.Redis], redis_server: TestRedis) -> None:
    ours = rq_info(db_url(redis_server.url, TASKFAN_DB))
    assert ours == rq_info(db_url(redis_server.url, RQ_DB))
    assert f"queue {QUEUE} 0, 0 executing, 15 finished, 6 failed" in ours


def _plain(value: Any) -> Any:
    """A Retry (which has no __eq__) as its attributes."""
    return vars(value) if isinstance(value, Retry) else value


def test_what_the_jobs_left(runs: tuple[redis.Redis, redis.Redis]) -> None:
    """Spot checks in plain terms, so a failure above reads as what went wrong."""
    _, client = runs

    def job(job_id: str) -> Job:
        return Job.fetch(job_id, connection=client)

    assert job("ok-int").return_value() == 42
    assert job("ok-nested").return_value() == {"a": [1, 2.5, None], "b": (True, "x")}
    assert job("ok-method").return_value() == 3
    assert job("ok-async").return_value() == 2
    assert job("ok-current-job").return_value() == ["ok-current-job", QUEUE, []]
    assert job("ok-kwargs-meta").get_meta() == {"owner": "me"}
    failed = job("fail").latest_result()
    assert failed is not None and failed.type == Result.Type.FAILED
    assert failed.exc_string is not None and failed.exc_string.startswith("Traceback")
    assert failed.exc_string.rstrip().endswith("ValueError: bad 1")
    timeout = job("timeout").latest_result()
    assert timeout is not None and timeout.exc_string is not None
    assert "JobTimeoutException: Task exceeded maximum timeout value (1 seconds)" in (
        timeout.exc_string
    )
    assert not Job.exists("result-ttl-0", connection=client)
    assert not Job.exists("ttl-expired", connection=client)
    assert job("retry").get_status() == JobStatus.FAILED
    assert job("retry").retries_left == 0
    assert job("retry-interval").get_status() == JobStatus.SCHEDULED
    assert [r.type for r in job("returns-retry").results()] == [
        Result.Type.SUCCESSFUL,
        Result.Type.RETRIED,
    ]
    assert job("returns-retry-max").latest_result().type == Result.Type.MAX_RETRIES_EXCEEDED  # type: ignore[union-attr]
    assert job("child").return_value() == 14
    assert client.llen(Queue(QUEUE, connection=client).intermediate_queue_key) == 0


# --------------------------------------------------------------------------- finish.lua, batched

#: jobs finish.lua records, enqueued alike on both sides: (job id, function, argument,
#: enqueue options); the parent's dependent "waiter" is enqueued too, and waits
BATCH: list[tuple[str, Any, Any, dict[str, Any]]] = [
    ("b-ok", rq_tasks.double, 1, {}),
    ("b-ok-keep", rq_tasks.double, 2, {"result_ttl": -1}),
    ("b-ok-100", rq_tasks.double, 3, {"result_ttl": 100}),
    ("b-none", rq_tasks.echo, None, {}),
    ("b-parent", rq_tasks.double, 4, {}),
    ("b-fail", rq_tasks.boom, 1, {}),
    ("b-fail-100", rq_tasks.boom, 2, {"failure_ttl": 100}),
    ("b-fail-keep", rq_tasks.boom, 3, {"failure_ttl": -1}),
    ("b-ttl-keep", rq_tasks.double, 7, {"ttl": 300, "result_ttl": -1}),  # persisted at start
    ("b-ttl-fail-keep", rq_tasks.boom, 4, {"ttl": 300, "failure_ttl": -1}),
    ("b-lapsed", rq_tasks.double, 5, {}),  # its lease lapses: neither side records it
]


def _started_batch(client: redis.Redis, worker: rqa.RqWorker) -> list[rqa.RqJob]:
    """BATCH enqueued, dequeued and started (start.lua) under ``worker``."""
    queue = Queue(QUEUE, connection=client)
    for job_id, func, arg, options in BATCH:
        queue.enqueue(func, arg, job_id=job_id, **options)
    queue.enqueue(rq_tasks.double, 6, job_id="b-waiter", depends_on="b-parent")
    # b-ok ran before, elsewhere: an execution of it outlives this one in its registry
    client.zadd("rq:executions:b-ok", {"0" * 32: time.time() + 5000})
    client.expire("rq:executions:b-ok", 5000)
    keys = rqa.QueueKeys(QUEUE)
    found = rqa.dequeue(client, keys, len(BATCH))
    jobs = [rqa.describe(QUEUE, job_id, fields) for job_id, fields in found if fields]
    now = time.time()
    assert rqa.start(client, worker.name, keys, jobs, lease=60, now=now) == [1] * len(jobs)
    for job in jobs:
        job.started = now
    client.zrem(keys.started, jobs[-1].member)  # b-lapsed: RQ's cleanup took it
    return jobs


def _outcome(job: rqa.RqJob) -> rqa.Outcome:
    started = time.time()
    if job.id.startswith("b-fail"):
        text = f"Traceback (most recent call last):\n  ...\nValueError: bad {job.id}\n"
        return rqa.Outcome(rqa.FAILED, text, started, started + 0.001)
    value = None if job.id == "b-none" else len(job.id)
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)  # RQ's serializer
    payload = None if value is None else base64.b64encode(data).decode()
    return rqa.Outcome(rqa.OK, payload, started, started + 0.001)


def test_finish_lua_for_many_jobs_in_one_call_leaves_what_rqs_code_leaves(
    redis_server: TestRedis,
) -> None:
    """One finish.lua call for a batch (with a job listed twice, and one whose lease
    lapsed) against RQ's own handle_job_success / handle_job_failure, job by job."""
    snapshots = []
    for db, batched in ((3, True), (4, False)):
        client = redis.Redis.from_url(db_url(redis_server.url, db))
        client.flushdb()
        worker = rqa.RqWorker(client, "batch-side", [QUEUE], None, 60)
        worker.register()
        jobs = _started_batch(client, worker)
        done = [(job, _outcome(job)) for job in jobs]
        assert all(job.fast(outcome.kind) for job, outcome in done)
        if batched:
            keys = rqa.QueueKeys(QUEUE)
            codes, dependents = rqa.finish(client, worker.name, keys, [*done, done[0]], time.time())
            assert codes == [1] * (len(done) - 1) + [0, 0]
            assert dependents == ["b-parent"]
            worker.enqueue_dependents(QUEUE, dependents)
        else:
            recorded = [worker.record(job, outcome) for job, outcome in done]
            assert recorded == [True] * (len(done) - 1) + [False]
        worker.idle()
        snapshots.append(snapshot(client, ["batch-side"]))
        client.flushdb()
        client.close()
    ours, theirs = snapshots
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert ours[key] == theirs[key], key
    assert "rq:job:b-lapsed" in ours and "rq:results:b-lapsed" not in ours
    assert ours["rq:queue:contract"][1] == ["b-waiter"]
