"""Dead letters: ``taskfan dead`` lists, requeues (as a retry round) and drops them."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from producer import Client
from producer.ops import deadletters
from producer.ops.overview import nodes as live_nodes
from taskfan import scripts
from taskfan.errors import TaskfanError
from taskfan.keys import GROUP, JobKeys, QueueKeys
from tests import tasks
from tests.cli_support import clean_env, invoke
from tests.conftest import StartWorker
from tests.helpers import wait_until

FAST_LEASES = {"TASKFAN_VISIBILITY_TIMEOUT": "2", "TASKFAN_HEARTBEAT_INTERVAL": "0.5"}
QUEUE = QueueKeys("default")

pytestmark = pytest.mark.usefixtures("clean_env")
__all__ = ["clean_env"]


def nodes(r: redis.Redis) -> list[dict[str, Any]]:
    return live_nodes(r, 0.0)


def ghost_deliveries(r: redis.Redis, times: int = 2) -> None:
    """Nodes that took the queue's first entry and died with it, ``times`` of them."""
    read: Any = r.xreadgroup(GROUP, "ghost-0", {QUEUE.stream: ">"}, count=1)
    ((_, [(entry_id, _)]),) = read
    for n in range(1, times):
        r.xclaim(QUEUE.stream, GROUP, f"ghost-{n}", 0, [entry_id])


def dead_lettered_job(
    client: Client, r: redis.Redis, start_worker: StartWorker, items: list[int]
) -> tuple[Any, str]:
    """A finished job whose first batch went to the dead letters (delivery limit),
    and the dead letter's id; a node with max_deliveries=2 stays up."""
    r.xgroup_create(QUEUE.stream, GROUP, id="0", mkstream=True)
    job = client.map(tasks.square, items, batch_size=3)
    ghost_deliveries(r)
    start_worker(env={**FAST_LEASES, "TASKFAN_MAX_DELIVERIES": "2"})
    assert job.wait(timeout=60)
    # Nodes record a batch's results, then acknowledge it (or dead-letter it): the
    # job can end a round trip before its dead letter appears.
    dead: Any = wait_until(lambda: r.xrange(QUEUE.dead), timeout=10, message="the dead letter")
    assert len(dead) == 1
    return job, dead[0][0].decode()


@pytest.mark.cluster
def test_requeue_runs_a_dead_letter_again_and_the_job_accounts_for_it(
    client: Client, r: redis.Redis, start_worker: StartWorker, redis_url: str
) -> None:
    job, dead_id = dead_lettered_job(client, r, start_worker, [1, 2, 3, 4, 5])
    assert job.progress() == (5, 3, 5)

    # The node took the batch over from the ghosts (a reclaim) and dead-lettered it.
    def counted() -> dict[str, Any] | None:
        found = nodes(r)
        return found[0] if found and found[0]["batches_dead"] == 1 else None

    record = wait_until(counted, timeout=30, message="the node's record counting it")
    assert record is not None
    assert record["reclaims"] == 1 and record["items_failed"] == 3
    listed = invoke("dead", "default", "--json", "--redis-url", redis_url)
    assert listed.exit_code == 0, listed.output
    (letter,) = json.loads(listed.stdout)
    assert (letter["id"], letter["job"], letter["batch"], letter["items"]) == (
        dead_id,
        job.id,
        "0",
        3,
    )
    assert "max_deliveries=2" in letter["reason"]
    table = invoke("dead", "default", "--redis-url", redis_url).stdout
    assert dead_id in table and "max_deliveries=2" in table

    done = invoke("dead", "default", dead_id, "--requeue", "--redis-url", redis_url)
    assert done.exit_code == 0, done.output
    assert f"job {job.id} batch 0.1 (3 items) queued again" in done.stderr
    assert r.xlen(QUEUE.dead) == 0
    # The node that dead-lettered it runs it now (a new entry: its first delivery).
    assert job.wait(timeout=60)
    meta = job.meta()
    assert (meta.ok, meta.failed, meta.total, meta.state.value) == (5, 0, 5, "finished")
    assert meta.batches_done == meta.batches + 1  # the batch, its dead-letter failure overlaid
    outcomes = list(job.outcomes())
    assert [o.value for o in outcomes] == [1, 4, 9, 16, 25]
    assert [o.attempts for o in outcomes] == [2, 2, 2, 1, 1]
    assert list(job.results()) == [1, 4, 9, 16, 25]
    # The job's keys expire again with its result TTL, as any finished job's.
    assert 0 < r.ttl(JobKeys(job.id).meta) <= meta.result_ttl

    again = invoke("dead", "default", dead_id, "--requeue", "--redis-url", redis_url)
    assert again.exit_code == 2 and f"no dead letter {dead_id}" in again.stderr


def test_requeue_is_refused_once_the_items_ran_again(
    client: Client, r: redis.Redis, start_worker: StartWorker
) -> None:
    job, dead_id = dead_lettered_job(client, r, start_worker, [1, 2, 3])
    assert job.retry_failed() == 3  # DeliveryLimit items kept their inputs
    assert job.wait(timeout=60) and job.progress() == (3, 0, 3)
    with pytest.raises(TaskfanError, match=r"item 0 succeeded since it was dead-lettered"):
        deadletters.requeue(r, "default", dead_id)
    assert r.xlen(QUEUE.dead) == 1 and job.progress() == (3, 0, 3)


def test_a_batch_recorded_before_it_was_dead_lettered_is_not_run_again(
    client: Client, r: redis.Redis, start_worker: StartWorker
) -> None:
    # A node recorded the batch, then died before acknowledging it; the next node to
    # get it found it over the delivery limit and dead-lettered it.
    start_worker()
    job = client.map(tasks.square, [1, 2], batch_size=2)
    assert job.wait(timeout=60)
    fields = {b"j": job.id.encode(), b"b": b"0", b"s": b"0", b"n": b"2", b"c": b"pickle",
              b"f": b"tests.tasks:square", b"m": b"1", b"k": b"0", b"p": b"xy"}  # fmt: skip
    scripts.dead_letter(r, QUEUE, b"1-0", fields, "delivered 6 times", 0.0)
    (dead_id,) = [d.id for d in deadletters.list_dead(r, "default")]
    with pytest.raises(TaskfanError, match="item 0 succeeded since it was dead-lettered"):
        deadletters.requeue(r, "default", dead_id)


def test_a_malformed_dead_letter_cannot_be_requeued_but_can_be_dropped(
    r: redis.Redis, redis_url: str
) -> None:
    scripts.dead_letter(r, QUEUE, b"1-0", {b"j": b"nojob", b"x": b"y"}, "missing field 'm'", 0.0)
    scripts.dead_letter(r, QUEUE, b"2-0", {b"j": b"other"}, "missing field 'm'", 0.0)
    first, second = [d.id for d in reversed(deadletters.list_dead(r, "default"))]
    refused = invoke("dead", "default", first, "--requeue", "--redis-url", redis_url)
    assert refused.exit_code == 2
    assert f"dead letter {first} of queue default: missing field 'm'" in refused.stderr
    assert "drop it instead" in refused.stderr
    dropped = invoke("dead", "default", first, "--drop", "--redis-url", redis_url)
    assert dropped.exit_code == 0 and "dropped 1 dead letters" in dropped.stderr
    assert [d.id for d in deadletters.list_dead(r, "default")] == [second]
    asks = invoke("dead", "default", "--drop", "--all", "--redis-url", redis_url, input="n\n")
    assert asks.exit_code == 2 and r.xlen(QUEUE.dead) == 1
    assert asks.stderr.endswith("Error: not confirmed: nothing changed\n"), asks.stderr
    unasked = invoke("dead", "default", "--drop", "--all", "--redis-url", redis_url, input="")
    assert unasked.exit_code == 2 and r.xlen(QUEUE.dead) == 1
    assert "no answer (standard input is closed): pass --yes" in unasked.stderr
    everything = invoke("dead", "default", "--drop", "--all", "--yes", "--redis-url", redis_url)
    assert everything.exit_code == 0 and r.xlen(QUEUE.dead) == 0


def test_usage_errors_say_what_is_missing(redis_url: str) -> None:
    for args, message in (
        (["--requeue"], "name the dead letters (IDs) or pass --all"),
        (["1-0"], "pass --requeue or --drop"),
        (["1-0", "--requeue", "--drop"], "choose one of --requeue and --drop"),
        (["1-0", "--all", "--drop"], "give IDs or --all, not both"),
    ):
        result = invoke("dead", "default", *args, "--redis-url", redis_url)
        assert result.exit_code == 2 and message in result.stderr, args


def test_the_requeue_round_opens_once_per_dead_letter(client: Client, r: redis.Redis) -> None:
    """requeue.lua prepares (compare-and-set on the retry round), open_round.lua
    opens (idempotent); a dead letter's round once open is answered again."""
    job = client.map(tasks.square, [1, 2, 3], batch_size=3)  # born sealed, nothing recorded
    keys = JobKeys(job.id)
    r.hset(keys.meta, "failed", 3)
    assert scripts.prepare_requeue_round(r, keys, "5-0", 1, 3, 0) == 0  # a round opened since
    assert scripts.prepare_requeue_round(r, keys, "5-0", 0, 3, 0) == 1
    assert (job.meta().failed, job.meta().retry_round) == (3, 0)  # prepared: nothing changed
    assert scripts.open_round(r, keys, 1) == 1
    assert scripts.open_round(r, keys, 1) == 1  # again: the same round, nothing changes
    assert scripts.prepare_requeue_round(r, keys, "5-0", 0, 3, 0) == 1  # open: the same round
    meta = job.meta()
    assert (meta.failed, meta.retry_round, meta.overlays) == (0, 1, {0: ("0.1",)})
    assert r.hget(keys.meta, "retry_batches") == b"1"
    assert scripts.prepare_requeue_round(r, keys, "6-0", 1, 3, 0) == 2  # another dead letter
    assert scripts.prepare_requeue_round(r, JobKeys("nosuchjob"), "5-0", 0, 3, 0) == -1
    assert scripts.open_round(r, JobKeys("nosuchjob"), 1) == -1
    job.cancel()
    assert scripts.prepare_requeue_round(r, keys, "7-0", 2, 3, 0) == -2
    assert scripts.open_round(r, keys, 2) == 0  # void: the job was cancelled


def test_requeue_while_the_job_still_runs(
    client: Client, r: redis.Redis, start_worker: StartWorker
) -> None:
    r.xgroup_create(QUEUE.stream, GROUP, id="0", mkstream=True)
    job = client.map(tasks.sleep, [0.01, 0.01, 0.01, 3.0], batch_size=3)
    ghost_deliveries(r)
    start_worker(env={**FAST_LEASES, "TASKFAN_MAX_DELIVERIES": "2"})
    wait_until(lambda: r.xlen(QUEUE.dead), timeout=60, message="the dead letter")
    (letter,) = deadletters.list_dead(r, "default")
    assert job.status == "running"  # its second batch sleeps for 3 s
    done = deadletters.requeue(r, "default", letter.id)
    assert (done.batch, done.round, done.items) == ("0.1", 1, 3)
    assert job.wait(timeout=60)
    meta = job.meta()
    assert (meta.ok, meta.failed, meta.batches_done, meta.batches) == (4, 0, 3, 2)
    assert list(job.results()) == [0.01, 0.01, 0.01, 3.0]
