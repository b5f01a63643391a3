"""Threat: someone who can write to Redis changes what a reader trusts in a job's
meta hash: its sealed totals (``batches``, ``total``), its retry rounds, the
events that say it was sealed, or the order of its results.

A signed job's meta carries ``sig`` (identity and nonce), ``tsig`` (its sealed
totals) and ``rsig:<n>`` (each retry round); a reader with the secret refuses a
meta whose signed values changed, naming the job and the field. Without a
secret, readers still check that the batches they read start where the one
before ended and add up to the meta's total.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
import redis

from producer import Client, Executor
from taskfan.errors import ProtocolError, SignatureError
from taskfan.keys import JobKeys
from tests import tasks
from tests.conftest import StartWorker
from tests.helpers import wait_until

SECRET = "meta-secret-0123456789abcdef"


@pytest.fixture
def signed(redis_url: str, start_worker: StartWorker) -> Client:
    start_worker(env={"TASKFAN_SECRET": SECRET})
    return Client.from_url(redis_url, secret=SECRET)


def _finished(client: Client, items: list[Any], **kwargs: Any) -> Any:
    job = client.map(tasks.identity, items, batch_size=1, **kwargs)
    assert job.wait(timeout=60)
    assert list(job.results()) == items
    return job


@pytest.mark.parametrize(
    ("change", "field"),
    [({"batches": 1, "total": 2}, "batches"), ({"total": 2}, "total"), ({"batches": 2}, "batches")],
)
def test_changed_sealed_totals_are_refused_by_results_and_progress(
    signed: Client, r: redis.Redis, change: dict[str, int], field: str
) -> None:
    job = _finished(signed, [1, 2, 3])
    r.hset(JobKeys(job.id).meta, mapping=cast(dict[Any, Any], change))
    expected = rf"^job {job.id} meta: field '{field}' says \d+, but the producer sealed"
    with pytest.raises(SignatureError, match=expected):
        list(job.results())
    with pytest.raises(SignatureError, match=expected):
        job.progress()
    with pytest.raises(SignatureError, match=expected):
        list(job.as_completed())


def test_a_job_sealed_while_streaming_is_signed_too(signed: Client, r: redis.Redis) -> None:
    """A job of more than one pipeline is sealed by seal.lua, with the signature."""
    items = list(range(40))
    job = signed.map(tasks.identity, iter(items), batch_size=1)  # 40 batches: 3 flushes
    assert list(job.results(timeout=60)) == items
    assert r.hget(JobKeys(job.id).meta, "tsig") is not None
    r.hset(JobKeys(job.id).meta, "total", 39)
    with pytest.raises(SignatureError, match="field 'total' says 39, but the producer sealed"):
        list(job.results())


def test_removing_the_totals_signature_is_refused(signed: Client, r: redis.Redis) -> None:
    job = _finished(signed, [1, 2])
    r.hdel(JobKeys(job.id).meta, "tsig")
    with pytest.raises(SignatureError, match=rf"^job {job.id} meta: fields 'batches' and 'total'"):
        list(job.results())


def test_a_forged_or_changed_retry_round_is_refused(signed: Client, r: redis.Redis) -> None:
    job = signed.map(tasks.fail_if_multiple_of_7, [1, 7, 14], batch_size=1)
    assert job.wait(timeout=60)
    assert job.retry_failed() == 2
    assert job.wait(timeout=60)
    assert [o.attempts for o in job.errors()] == [2, 2]
    meta = JobKeys(job.id).meta
    signed_round: Any = r.hget(meta, "round:1")
    r.hset(meta, "round:1", "[1]")  # hide the retry of batch 2
    with pytest.raises(SignatureError, match=rf"^job {job.id} meta: field 'round:1'"):
        list(job.outcomes())
    r.hset(meta, "round:1", signed_round)
    assert [o.attempts for o in job.errors()] == [2, 2]  # restored: trusted again
    r.hset(meta, mapping={"round:2": "[0]", "retry_round": 2})  # a round nobody signed
    with pytest.raises(SignatureError, match=rf"^job {job.id} meta: field 'round:2'"):
        list(job.outcomes())


def test_a_meta_copied_onto_another_job_is_refused(signed: Client, r: redis.Redis) -> None:
    first = _finished(signed, [1, 2])
    second = _finished(signed, [3, 4])
    raw: Any = r.hgetall(JobKeys(first.id).meta)
    r.delete(JobKeys(second.id).meta)
    r.hset(JobKeys(second.id).meta, mapping=raw)
    with pytest.raises(SignatureError, match=rf"^job {second.id} meta: field 'id' names another"):
        list(second.results())


def test_a_forged_sealed_event_cannot_cut_a_job_short(redis_url: str, r: redis.Redis) -> None:
    """An Executor's job is unsealed while the executor lives: a reader learns its
    size from the events stream, which anyone can write to."""
    client = Client.from_url(redis_url, secret=SECRET)
    with Executor(client) as executor:
        executor.submit(tasks.add, 1, 2)  # queued; no node runs it
        # (submit sends from a thread of its own: the job exists once it has)
        wait_until(lambda: executor._job is not None, 30, message="the job")
        assert executor._job is not None
        job = client.job(executor._job.id)
        r.xadd(JobKeys(job.id).events, {"sealed": 0})
        with pytest.raises(ProtocolError, match="its events say it was sealed with 0 batches"):
            list(job.outcomes(timeout=10))
        executor.shutdown(wait=False, cancel_futures=True)


def test_without_a_secret_batches_must_be_contiguous_and_add_up(
    redis_url: str, r: redis.Redis, start_worker: StartWorker
) -> None:
    start_worker()
    client = Client.from_url(redis_url)
    job = _finished(client, [1, 2, 3])
    keys = JobKeys(job.id)
    r.hset(keys.meta, mapping={"batches": 1, "total": 2})  # truncated, inconsistently
    with pytest.raises(ProtocolError, match=rf"^job {job.id}: its 1 batches hold 1 items, but"):
        list(job.results())
    r.hset(keys.meta, mapping={"batches": 3, "total": 3})
    first, second = cast(list[bytes], r.hmget(keys.results, ["0", "1"]))
    r.hset(keys.results, mapping={"0": second, "1": first})  # swapped
    with pytest.raises(ProtocolError, match=rf"^job {job.id} batch 0: starts at item 1"):
        list(job.results())


@pytest.mark.parametrize("field", ["init", "initargs"])
def test_a_changed_initializer_is_refused(signed: Client, r: redis.Redis, field: str) -> None:
    """Retry rounds send the meta's initializer again, signed: it must be the producer's."""
    from tests import init_calls

    job = signed.map(tasks.identity, [1], initializer=init_calls.init, initargs=("x",))
    assert job.wait(timeout=60)
    r.hset(JobKeys(job.id).meta, field, "os:system")
    with pytest.raises(SignatureError, match=rf"job {job.id} meta"):
        job.progress()
