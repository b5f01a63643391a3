"""The RQ adapter piece by piece: the pool side (``run_job``, no Redis) and each
script against a real Redis (dequeue, start, refresh, release, stuck-job recovery),
and the package's boundary: nothing outside it imports rq."""

from __future__ import annotations

import ast
import base64
import pickle
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Callback, Queue, Retry, get_current_job
from rq.defaults import UNSERIALIZABLE_RETURN_VALUE_PAYLOAD
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import utcformat

from taskfan.errors import ConfigError
from tests import rq_tasks
from worker.sources.rq import adapter as rqa

QUEUE = "adapter"


def fetched(client: redis.Redis, job_id: str) -> list[bytes | None]:
    """The fields of a job's hash that dequeue.lua reads."""
    found: Any = client.hmget(Job.key_for(job_id), rqa.FETCHED)
    return list(found)


def listed(client: redis.Redis, key: str) -> list[str]:
    found: Any = client.lrange(key, 0, -1)
    return [i.decode() for i in found]


def item(client: redis.Redis, job: Job, serializer: str | None = None) -> tuple[Any, ...]:
    """What the node would hand a pool process for ``job``."""
    return rqa.describe(QUEUE, job.id, fetched(client, job.id)).item(serializer)


def run(client: redis.Redis, job: Job, serializer: str | None = None) -> rqa.Outcome:
    return rqa.Outcome(*rqa.run_job(item(client, job, serializer)))


def value(outcome: rqa.Outcome) -> Any:
    assert outcome.kind == rqa.OK and outcome.payload is not None
    return pickle.loads(base64.b64decode(outcome.payload))


# --------------------------------------------------------------------------- run_job


def test_a_job_returns_its_value_serialized_as_rq_stores_it(r: redis.Redis) -> None:
    queue = Queue(QUEUE, connection=r)
    outcome = run(r, queue.enqueue(rq_tasks.double, 21))
    assert value(outcome) == 42
    assert outcome.started <= outcome.ended <= time.time()
    assert run(r, queue.enqueue(rq_tasks.nothing)).payload is None
    assert value(run(r, queue.enqueue(rq_tasks.Adder(1).add, 2))) == 3
    assert value(run(r, queue.enqueue(rq_tasks.coroutine, 1))) == 2
    assert value(run(r, queue.enqueue(rq_tasks.double, x=4))) == 8


def test_an_unpicklable_value_becomes_rqs_placeholder(r: redis.Redis) -> None:
    outcome = run(r, Queue(QUEUE, connection=r).enqueue(rq_tasks.unpicklable))
    assert value(outcome) == UNSERIALIZABLE_RETURN_VALUE_PAYLOAD


def test_an_exception_becomes_rqs_traceback_text(r: redis.Redis) -> None:
    outcome = run(r, Queue(QUEUE, connection=r).enqueue(rq_tasks.boom, 7))
    assert outcome.kind == rqa.FAILED and outcome.payload is not None
    assert outcome.payload.startswith("Traceback (most recent call last):")
    assert outcome.payload.rstrip().endswith("ValueError: bad 7")
    assert 'rq_tasks.py", line' in outcome.payload


def test_the_timeout_is_rqs(r: redis.Redis) -> None:
    job = Queue(QUEUE, connection=r).enqueue(rq_tasks.busy, 30, job_timeout=1)
    started = time.monotonic()
    outcome = run(r, job)
    assert time.monotonic() - started < 5
    assert outcome.kind == rqa.FAILED and outcome.payload is not None
    assert outcome.payload.rstrip().endswith(
        "rq.timeouts.JobTimeoutException: Task exceeded maximum timeout value (1 seconds)"
    )


def test_a_timeout_too_large_for_the_alarm_is_capped_not_an_overflow(r: redis.Redis) -> None:
    """signal.alarm takes a C int: RQ's own worker would raise OverflowError for
    10**10 seconds. The job runs (any limit past 68 years is as good as none)."""
    job = Queue(QUEUE, connection=r).enqueue(rq_tasks.echo, 7, job_timeout=10**10)
    assert value(run(r, job)) == 7
    again = Queue(QUEUE, connection=r).enqueue(rq_tasks.echo, 8)
    assert value(run(r, again)) == 8  # nothing of the first job is left behind


def test_a_returned_retry_travels_as_plain_data(r: redis.Redis) -> None:
    outcome = run(r, Queue(QUEUE, connection=r).enqueue(rq_tasks.always_retry))
    assert outcome.kind == rqa.RETRY
    assert outcome.retry == (2, [0], False)


def test_get_current_job_is_the_running_job(r: redis.Redis) -> None:
    job = Queue(QUEUE, connection=r).enqueue(rq_tasks.whoami, meta={"k": 1})
    assert value(run(r, job)) == [job.id, QUEUE, []]


def test_each_job_is_the_current_one_while_it_runs_and_none_after(r: redis.Redis) -> None:
    queue = Queue(QUEUE, connection=r)
    first, second = (queue.enqueue(rq_tasks.whoami) for _ in range(2))
    assert value(run(r, first))[0] == first.id
    assert get_current_job() is None
    assert value(run(r, second))[0] == second.id
    assert get_current_job() is None


def test_the_timeout_holds_after_a_taskfan_chunk_set_its_own_handler(r: redis.Redis) -> None:
    """A node serving taskfan queues too runs their chunks' soft timeouts in the same
    pool processes, with a SIGALRM handler of their own."""
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: None)
    try:
        job = Queue(QUEUE, connection=r).enqueue(rq_tasks.busy, 30, job_timeout=1)
        outcome = run(r, job)
        assert outcome.kind == rqa.FAILED and outcome.payload is not None
        assert "JobTimeoutException: Task exceeded maximum timeout value" in outcome.payload
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_a_job_that_writes_to_redis_through_rq_fails_clearly(r: redis.Redis) -> None:
    outcome = run(r, Queue(QUEUE, connection=r).enqueue(rq_tasks.save_meta))
    assert outcome.kind == rqa.FAILED and outcome.payload is not None
    assert "a job run by taskfan has no Redis connection" in outcome.payload
    assert "docs/rq.md" in outcome.payload


def test_undecodable_data_fails_as_in_rq(r: redis.Redis) -> None:
    job = Queue(QUEUE, connection=r).enqueue(rq_tasks.double, 1)
    fields = fetched(r, job.id)
    fields[0] = b"x\x9cnot zlib, not pickle"
    outcome = rqa.Outcome(*rqa.run_job(rqa.describe(QUEUE, job.id, fields).item(None)))
    assert outcome.kind == rqa.FAILED and outcome.payload is not None
    assert "DeserializationError" in outcome.payload


def test_the_queues_serializer_is_used(r: redis.Redis) -> None:
    queue = Queue(QUEUE, connection=r, serializer=JSONSerializer)
    outcome = run(r, queue.enqueue(rq_tasks.echo, {"a": [1, 2]}), serializer="json")
    assert outcome.payload is not None
    assert JSONSerializer.loads(base64.b64decode(outcome.payload)) == {"a": [1, 2]}


# --------------------------------------------------------------------------- describe


def test_jobs_with_callbacks_webhooks_or_repeats_are_refused_with_the_reason(
    r: redis.Redis,
) -> None:
    queue = Queue(QUEUE, connection=r)
    job = queue.enqueue(rq_tasks.double, 1, on_success=Callback(rq_tasks.on_success))
    described = rqa.describe(QUEUE, job.id, fetched(r, job.id))
    assert described.unsupported is not None
    assert "on_success=tests.rq_tasks.on_success" in described.unsupported
    assert "rq worker" in described.unsupported and job.id in described.unsupported
    plain = queue.enqueue(rq_tasks.double, 1)
    assert rqa.describe(QUEUE, plain.id, fetched(r, plain.id)).unsupported is None


def test_the_fast_path_only_where_finish_lua_matches_rq(r: redis.Redis) -> None:
    queue = Queue(QUEUE, connection=r)

    def job(**options: Any) -> rqa.RqJob:
        made = queue.enqueue(rq_tasks.double, 1, **options)
        return rqa.describe(QUEUE, made.id, fetched(r, made.id))

    assert job().fast(rqa.OK) and job().fast(rqa.FAILED)
    assert job(result_ttl=-1).fast(rqa.OK)
    assert not job(result_ttl=0).fast(rqa.OK)
    assert not job(failure_ttl=0).fast(rqa.FAILED)
    assert not job(retry=Retry(max=1)).fast(rqa.FAILED)
    assert not job().fast(rqa.RETRY)
    old = job()
    r.hdel(Job.key_for(old.id), "group_id")  # a hash RQ 2.12's to_dict did not write
    assert not rqa.describe(QUEUE, old.id, fetched(r, old.id)).fast(rqa.OK)


def test_now_text_is_rqs_format() -> None:
    for ts in (0.0, 1795603063.233619, 1795603063.9999996, 1795603064.0, time.time()):
        assert rqa.now_text(ts) == utcformat(datetime.fromtimestamp(ts, timezone.utc))


def test_rq_versions_outside_the_supported_range_are_refused() -> None:
    rqa.check_version()  # the installed one
    for fine in ("2.12.0", "2.13.1", "3.0.0", "3.7.2rc1"):
        rqa.check_version(fine)
    for version in ("2.11.9", "1.16.2", "4.0.0", "garbage"):
        with pytest.raises(ConfigError, match=rf"rq 2\.12 up to 4\.0.*rq {version} is installed"):
            rqa.check_version(version)


# --------------------------------------------------------------------------- scripts


def enqueue(client: redis.Redis, count: int) -> list[str]:
    queue = Queue(QUEUE, connection=client)
    return [queue.enqueue(rq_tasks.double, i).id for i in range(count)]


def test_dequeue_moves_ids_to_the_intermediate_list_with_their_fields(r: redis.Redis) -> None:
    keys = rqa.QueueKeys(QUEUE)
    ids = enqueue(r, 5)
    r.delete(Job.key_for(ids[1]))  # gone before it was dequeued (e.g. its ttl ran out)
    found = rqa.dequeue(r, keys, 3)
    assert [job_id for job_id, _ in found] == ids[:3]
    assert found[1][1] is None
    fields = found[0][1]
    assert fields is not None and len(fields) == len(rqa.FETCHED)
    assert fields[rqa.FETCHED.index(b"origin")] == QUEUE.encode()
    assert fields[rqa.FETCHED.index(b"webhooks")] is None
    assert listed(r, keys.intermediate) == [ids[0], ids[2]]
    assert listed(r, keys.queue) == ids[3:]


def test_dequeue_blocking_then_the_rest(r: redis.Redis) -> None:
    keys = rqa.QueueKeys(QUEUE)
    assert rqa.dequeue_blocking(r, keys, 0.05) is None
    ids = enqueue(r, 3)
    first = rqa.dequeue_blocking(r, keys, 1)
    assert first == ids[0]
    found = rqa.dequeue(r, keys, 5, moved=[first])
    assert [job_id for job_id, _ in found] == ids


def held(client: redis.Redis, count: int) -> list[rqa.RqJob]:
    """``count`` jobs dequeued (in the intermediate list), as the node describes them."""
    enqueue(client, count)
    found = rqa.dequeue(client, rqa.QueueKeys(QUEUE), count)
    return [rqa.describe(QUEUE, job_id, fields) for job_id, fields in found if fields]


def test_start_marks_jobs_started_as_rqs_worker_does(r: redis.Redis) -> None:
    keys = rqa.QueueKeys(QUEUE)
    jobs = held(r, 4)
    r.delete(Job.key_for(jobs[1].id))
    Job.fetch(jobs[2].id, connection=r).cancel()
    r.lrem(keys.intermediate, 1, jobs[3].id)  # taken back meanwhile
    r.set(keys.first_seen(jobs[0].id), 1)  # seen waiting there by a maintenance pass
    now = time.time()
    codes = rqa.start(r, "node-1", keys, jobs, lease=30, now=now)
    assert codes == [1, -1, -2, 0]
    assert rqa.start(r, "node-1", keys, jobs[:1], lease=30, now=now) == [1]  # a retried call
    job = Job.fetch(jobs[0].id, connection=r)
    assert job.get_status() == "started" and job.worker_name == "node-1"
    assert r.ttl(job.key) == -1  # persisted, as Job.perform does
    registry = Queue(QUEUE, connection=r).started_job_registry
    assert registry.get_job_and_execution_ids() == [(jobs[0].id, jobs[0].execution_id)]
    assert r.zscore(keys.started, jobs[0].member) == pytest.approx(int(now) + 30)
    assert r.ttl(f"rq:execution:{jobs[0].member}") > 25
    assert r.llen(keys.intermediate) == 0
    assert not r.exists(keys.first_seen(jobs[0].id))  # not waiting any more


def test_refresh_renews_leases_and_reports_lost_ones(r: redis.Redis) -> None:
    keys = rqa.QueueKeys(QUEUE)
    jobs = held(r, 2)
    now = time.time()
    rqa.start(r, "node-1", keys, jobs, lease=5, now=now)
    r.zrem(keys.started, jobs[1].member)  # RQ's cleanup took it
    assert rqa.refresh(r, keys, jobs, lease=60, now=now + 3) == [1, 0]
    assert r.zscore(keys.started, jobs[0].member) == pytest.approx(int(now + 3) + 60)
    assert r.ttl(f"rq:execution:{jobs[0].member}") > 55
    assert r.zscore(keys.started, jobs[1].member) is None


def test_release_puts_unstarted_jobs_back_at_the_head_in_order(r: redis.Redis) -> None:
    keys = rqa.QueueKeys(QUEUE)
    jobs = held(r, 3)
    rest = enqueue(r, 2)
    r.lrem(keys.intermediate, 1, jobs[1].id)  # someone else moved it on
    assert rqa.release(r, keys, [j.id for j in jobs]) == 2
    assert listed(r, keys.queue) == [jobs[0].id, jobs[2].id, *rest]
    assert r.llen(keys.intermediate) == 0


def test_jobs_stuck_in_the_intermediate_list_go_back_after_the_grace(r: redis.Redis) -> None:
    keys = rqa.QueueKeys(QUEUE)
    jobs = held(r, 4)
    rqa.start(r, "node-1", keys, jobs[:1], lease=30, now=time.time())  # started: not stuck
    r.lpush(keys.intermediate, jobs[0].id)  # RQ's prepare left it there too
    r.delete(Job.key_for(jobs[3].id))  # gone: its id just leaves
    own = {jobs[2].id}  # held by this node: not stuck
    now = time.time()
    assert rqa.recover_stuck(r, keys, grace=10, own=own, now=now) == 0  # first seen now
    assert rqa.recover_stuck(r, keys, grace=10, own=own, now=now + 5) == 0
    assert rqa.recover_stuck(r, keys, grace=10, own=own, now=now + 11) == 1
    assert listed(r, keys.queue) == [jobs[1].id]
    assert sorted(listed(r, keys.intermediate)) == sorted([jobs[0].id, jobs[2].id])
    assert not r.exists(keys.first_seen(jobs[1].id))


def test_a_live_nodes_lease_keeps_its_held_jobs_from_looking_stuck(r: redis.Redis) -> None:
    keys = rqa.QueueKeys(QUEUE)
    jobs = held(r, 1)
    now = time.time()
    rqa.recover_stuck(r, keys, grace=10, own=set(), now=now)  # another node's pass
    rqa.keep_held(r, keys, [jobs[0].id])  # this node's heartbeat
    assert rqa.recover_stuck(r, keys, grace=10, own=set(), now=now + 11) == 0
    assert r.llen(keys.intermediate) == 1


# --------------------------------------------------------------------------- security settings


def test_signed_or_no_pickle_nodes_refuse_pickled_rq_queues() -> None:
    for serializer in (None, "pickle"):
        with pytest.raises(ConfigError, match="RQ jobs are not signed"):
            rqa.check_trust(serializer, signed=True, no_pickle=False)
        with pytest.raises(ConfigError, match=r"refuses pickle \(--no-pickle\)"):
            rqa.check_trust(serializer, signed=False, no_pickle=True)
        rqa.check_trust(serializer, signed=False, no_pickle=False)
    rqa.check_trust("json", signed=True, no_pickle=True)


def run_allowed(r: redis.Redis, job: Job, allow: tuple[str, ...]) -> rqa.Outcome:
    values = rqa.describe(QUEUE, job.id, fetched(r, job.id)).item(None, allow)
    return rqa.Outcome(*rqa.run_job(values))


def test_the_allowlist_applies_to_the_rq_jobs_own_function(r: redis.Redis) -> None:
    queue = Queue(QUEUE, connection=r)
    assert value(run_allowed(r, queue.enqueue(rq_tasks.double, 2), ("tests",))) == 4
    assert value(run_allowed(r, queue.enqueue(rq_tasks.Adder(1).add, 2), ("tests",))) == 3
    refused = run_allowed(r, queue.enqueue(rq_tasks.double, 2), ("myapp",))
    assert refused.kind == rqa.FAILED and refused.payload is not None
    assert "FunctionNotAllowed: 'tests.rq_tasks.double' is not allowed on this node" in (
        refused.payload
    )
    # a name in an allowed module that is really another module's function
    borrowed = queue.enqueue("tests.rq_tasks.get_current_job")
    outcome = run_allowed(r, borrowed, ("tests.rq_tasks",))
    assert outcome.kind == rqa.FAILED and outcome.payload is not None
    assert "'rq.job.get_current_job' is not allowed" in outcome.payload
    method = run_allowed(r, queue.enqueue(rq_tasks.Adder(1).add, 2), ("myapp",))
    assert method.payload is not None and "tests.rq_tasks.Adder.add" in method.payload


# --------------------------------------------------------------------------- the boundary


def test_nothing_outside_the_adapter_package_imports_rq() -> None:
    """The issue's rule: every touch of RQ's internals is in worker/sources/rq/adapter/."""
    root = Path(__file__).resolve().parent.parent
    adapter = root / "worker" / "sources" / "rq" / "adapter"
    offenders = []
    for package in ("taskfan", "producer", "worker"):
        for path in sorted((root / package).rglob("*.py")):
            if adapter in path.parents:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                else:
                    continue
                if any(name == "rq" or name.startswith("rq.") for name in names):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
    assert any(adapter.glob("*.py")), "the adapter package moved: update this test"


def test_the_timeout_cache_of_a_pool_process_stays_small(r: redis.Redis) -> None:
    """Each distinct timeout field is parsed once; distinct values written by anyone
    must not grow a pool process's memory without end."""
    from worker.sources.rq.adapter import execute

    for n in range(1, 1500):
        execute._parse_timeout(str(n).encode())
    assert len(execute._timeouts) <= 1024
