"""Lua scripts, on a real redis-server and on fakeredis: each runs the same on both."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from taskfan import scripts
from taskfan.bounds import MAX_RESULT_TTL
from taskfan.codec import PICKLE
from taskfan.keys import GROUP, JobKeys, QueueKeys
from taskfan.meta import JobMeta, JobState
from taskfan.outcomes import encode_result

NOW = 1_700_000_000.25
JOB = JobKeys("job1")


def create_job(
    client: redis.Redis, *, batches: int = 2, sealed: bool = True, ttl: int | str = 60
) -> None:
    """The meta hash a producer writes, with nothing recorded yet."""
    client.hset(
        JOB.meta,
        mapping={
            "id": JOB.id, "queue": "default", "fn": "tests.tasks:square", "codec": "pickle",
            "mode": "1", "state": "active", "sealed": int(sealed), "total": 3 * batches,
            "batches": batches, "ok": 0, "failed": 0, "batches_done": 0, "batch_size": 3,
            "chunksize": 0, "result_ttl": ttl, "created_at": NOW - 10,
        },
    )  # fmt: skip


def meta(client: redis.Redis) -> JobMeta:
    return JobMeta.parse(JOB.id, client.hgetall(JOB.meta))  # type: ignore[arg-type]


def events(client: redis.Redis) -> list[dict[bytes, bytes]]:
    entries: Any = client.xrange(JOB.events)
    return [fields for _, fields in entries]


def entry(index: int) -> bytes:
    return encode_result(3 * index, 3, 1, [PICKLE.dumps([[1, None, 3], []])])


def record(client: Any, index: int, ok: int = 2, failed: int = 1) -> Any:
    return scripts.record_batch(client, JOB, index, entry(index), ok, failed, NOW)


def test_a_batch_is_recorded_once(any_redis: redis.Redis) -> None:
    create_job(any_redis)
    assert record(any_redis, 0) == scripts.RECORDED
    assert record(any_redis, 0, ok=3, failed=0) == scripts.ALREADY_RECORDED
    job = meta(any_redis)
    assert (job.ok, job.failed, job.batches_done, job.state) == (2, 1, 1, JobState.ACTIVE)
    assert any_redis.hget(JOB.results, "0") == entry(0)
    assert events(any_redis) == [{b"b": b"0"}]


def test_recording_for_a_missing_job_writes_nothing(any_redis: redis.Redis) -> None:
    assert record(any_redis, 0) == scripts.JOB_GONE
    assert any_redis.exists(*JOB.all()) == 0


def test_recording_for_a_cancelled_job_is_refused(any_redis: redis.Redis) -> None:
    create_job(any_redis)
    assert scripts.cancel_job(any_redis, JOB, NOW) == 1
    assert record(any_redis, 0) == scripts.JOB_CANCELLED
    assert any_redis.hlen(JOB.results) == 0
    assert meta(any_redis).batches_done == 0


@pytest.mark.parametrize("ttl", [60, 0])
def test_the_last_batch_of_a_sealed_job_finishes_it(any_redis: redis.Redis, ttl: int) -> None:
    create_job(any_redis, batches=2, ttl=ttl)
    assert record(any_redis, 1) == 1
    assert meta(any_redis).state is JobState.ACTIVE
    assert all(any_redis.ttl(key) == -1 for key in JOB.all())
    assert record(any_redis, 0) == scripts.RECORDED_LAST
    job = meta(any_redis)
    assert (job.state, job.finished_at, job.done, job.batches_done) == (
        JobState.FINISHED,
        NOW,
        6,
        2,
    )
    assert events(any_redis) == [{b"b": b"1"}, {b"b": b"0"}, {b"end": b"finished"}]
    ttls = [any_redis.ttl(key) for key in JOB.all()]
    if ttl:
        assert all(0 < t <= ttl for t in ttls), ttls
    else:
        assert ttls == [-1, -1, -1]


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        *[(ttl, MAX_RESULT_TTL) for ttl in ("1e20", "inf", str(10**30))],
        ("12.7", 12),
        *[(ttl, -1) for ttl in ("nan", "-5", "soon")],
    ],
)
def test_a_meta_with_an_absurd_result_ttl_still_ends_its_job(
    any_redis: redis.Redis, ttl: str, expected: int
) -> None:
    """Anyone can write a meta hash: EXPIRE with 1e20 would stop the script half-way."""
    create_job(any_redis, batches=1, ttl=ttl)
    assert record(any_redis, 0) == scripts.RECORDED_LAST
    assert meta_state(any_redis) == b"finished"
    ttls = [any_redis.ttl(key) for key in JOB.all()]
    assert all(expected - 5 <= t <= expected for t in ttls), ttls


def meta_state(client: redis.Redis) -> Any:
    return client.hget(JOB.meta, "state")


def test_an_unsealed_job_stays_active_with_every_batch_so_far_recorded(
    any_redis: redis.Redis,
) -> None:
    create_job(any_redis, batches=0, sealed=False)
    assert record(any_redis, 0) == 1
    assert record(any_redis, 1) == 1
    assert meta(any_redis).state is JobState.ACTIVE
    assert not any(b"end" in e for e in events(any_redis))


def test_sealing_an_empty_job_finishes_it(any_redis: redis.Redis) -> None:
    create_job(any_redis, batches=0, sealed=False)
    assert scripts.seal_job(any_redis, JOB, 0, 0, NOW) == 2
    job = meta(any_redis)
    assert (job.state, job.sealed, job.total, job.finished_at) == (JobState.FINISHED, True, 0, NOW)
    assert events(any_redis) == [{b"sealed": b"0"}, {b"end": b"finished"}]
    assert all(0 < any_redis.ttl(key) <= 60 for key in (JOB.meta, JOB.events))


def test_sealing_after_every_batch_was_recorded_finishes_the_job(any_redis: redis.Redis) -> None:
    create_job(any_redis, batches=0, sealed=False)
    assert record(any_redis, 0) == 1
    assert record(any_redis, 1) == 1
    assert scripts.seal_job(any_redis, JOB, 6, 2, NOW) == 2
    job = meta(any_redis)
    assert (job.state, job.total, job.batches, job.done) == (JobState.FINISHED, 6, 2, 6)
    assert events(any_redis)[-2:] == [{b"sealed": b"2"}, {b"end": b"finished"}]
    assert all(0 < any_redis.ttl(key) <= 60 for key in JOB.all())


def test_sealing_with_batches_to_go_leaves_the_job_active(any_redis: redis.Redis) -> None:
    create_job(any_redis, batches=0, sealed=False)
    assert record(any_redis, 0) == 1
    assert scripts.seal_job(any_redis, JOB, 6, 2, NOW) == 1
    assert meta(any_redis).status == "running"
    assert record(any_redis, 1) == scripts.RECORDED_LAST
    assert meta(any_redis).state is JobState.FINISHED


def test_sealing_a_missing_job_creates_nothing(any_redis: redis.Redis) -> None:
    assert scripts.seal_job(any_redis, JOB, 1, 1, NOW) == -1
    assert any_redis.exists(*JOB.all()) == 0


def test_cancel_only_ends_active_jobs(any_redis: redis.Redis) -> None:
    assert scripts.cancel_job(any_redis, JOB, NOW) == -1
    create_job(any_redis)
    assert scripts.cancel_job(any_redis, JOB, NOW) == 1
    assert scripts.cancel_job(any_redis, JOB, NOW + 1) == 0
    job = meta(any_redis)
    assert (job.state, job.finished_at) == (JobState.CANCELLED, NOW)
    assert events(any_redis) == [{b"end": b"cancelled"}]
    assert 0 < any_redis.ttl(JOB.meta) <= 60


def test_dead_letter_moves_an_entry_out_of_the_queue(any_redis: redis.Redis) -> None:
    queue = QueueKeys("default")
    any_redis.xgroup_create(queue.stream, GROUP, id="0", mkstream=True)
    kept = any_redis.xadd(queue.stream, {"j": "job2", "b": "0"})
    poison = any_redis.xadd(queue.stream, {"j": "job1", "b": "1", "p": b"\x00\xff"})
    any_redis.xreadgroup(GROUP, "node-1", {queue.stream: ">"})
    fields = {b"j": b"job1", b"b": b"1", b"p": b"\x00\xff"}
    reason = "delivered 5 times: worker process died: signal 9"
    dead_id = scripts.dead_letter(any_redis, queue, poison, fields, reason, NOW)

    left: Any = any_redis.xrange(queue.stream)
    assert [entry_id for entry_id, _ in left] == [kept]
    pending = any_redis.xpending_range(queue.stream, GROUP, "-", "+", 10)
    assert [p["message_id"] for p in pending] == [kept]
    dead_entries: Any = any_redis.xrange(queue.dead)
    [(got_id, dead)] = dead_entries
    assert got_id == dead_id
    assert dead == {
        b"reason": reason.encode(),
        b"entry": poison,
        b"at": repr(NOW).encode(),
        **fields,
    }


def test_pipelines_call_scripts_by_sha_once_loaded(any_redis: redis.Redis) -> None:
    create_job(any_redis, batches=2)
    scripts.load_all(any_redis)
    with any_redis.pipeline(transaction=False) as pipe:
        record(pipe, 0)
        record(pipe, 0)
        record(pipe, 1)
        assert pipe.execute() == [1, 0, scripts.RECORDED_LAST]
    assert meta(any_redis).state is JobState.FINISHED


def test_a_flushed_script_cache_is_reported_so_the_caller_can_reload(
    any_redis: redis.Redis,
) -> None:
    create_job(any_redis)
    any_redis.script_flush()
    assert record(any_redis, 0) == 1  # a client call loads the script itself
    any_redis.script_flush()
    with any_redis.pipeline(transaction=False) as pipe:
        record(pipe, 1)
        with pytest.raises(redis.exceptions.NoScriptError):
            pipe.execute()
    scripts.load_all(any_redis)
    with any_redis.pipeline(transaction=False) as pipe:
        record(pipe, 1)
        assert pipe.execute() == [scripts.RECORDED_LAST]


def test_a_hard_cancel_marks_the_job_for_nodes_to_kill_its_running_items(
    any_redis: redis.Redis,
) -> None:
    create_job(any_redis)
    assert scripts.cancel_job(any_redis, JOB, NOW, terminate=True) == 1
    assert any_redis.hget(JOB.meta, "terminate") == b"1"
    assert meta(any_redis).state is JobState.CANCELLED


def test_a_soft_cancel_leaves_running_items_and_can_be_made_hard(any_redis: redis.Redis) -> None:
    create_job(any_redis)
    assert scripts.cancel_job(any_redis, JOB, NOW) == 1
    assert any_redis.hget(JOB.meta, "terminate") is None
    assert scripts.cancel_job(any_redis, JOB, NOW + 1, terminate=True) == 0
    assert any_redis.hget(JOB.meta, "terminate") == b"1"
    assert meta(any_redis).finished_at == NOW  # the first cancel still dates it


def test_a_hard_cancel_of_a_finished_job_changes_nothing(any_redis: redis.Redis) -> None:
    create_job(any_redis, batches=1)
    any_redis.hset(JOB.meta, "state", "finished")
    assert scripts.cancel_job(any_redis, JOB, NOW, terminate=True) == 0
    assert any_redis.hget(JOB.meta, "terminate") is None
