"""worker.sources.streams.redis_io.NodeRedis against a real server: the reads' job-state check,
and every path after a Redis restarted without persistence (no group, no scripts)."""

from __future__ import annotations

import logging

import pytest
import redis

from producer import Client
from taskfan import scripts
from taskfan.keys import JobKeys
from tests import tasks
from worker.core.batches import Completed, Delivery
from worker.sources.streams.redis_io import NodeRedis


def test_an_active_job_is_checked_once_a_second_not_once_a_read(r: redis.Redis) -> None:
    now = [0.0]
    node = NodeRedis(r, ["default"], "n1", clock=lambda: now[0])
    node.prepare()
    job = Client(r).map(tasks.square, range(6), batch_size=1)
    r.config_resetstat()
    assert [d.skip for d in node.read(2, 0)] == [None, None]
    r.hset(JobKeys(job.id).meta, "state", "cancelled")
    # within ACTIVE_FOR the job still counts as active: no state read
    assert [d.skip for d in node.read(2, 0)] == [None, None]
    assert r.info("commandstats")["cmdstat_hmget"]["calls"] == 1
    now[0] += NodeRedis.ACTIVE_FOR
    assert [d.skip for d in node.read(2, 0)] == ["the job was cancelled"] * 2


def test_a_vanished_job_is_never_taken_for_active(r: redis.Redis) -> None:
    node = NodeRedis(r, ["default"], "n1", clock=lambda: 0.0)
    node.prepare()
    job = Client(r).map(tasks.square, range(4), batch_size=1)
    r.delete(JobKeys(job.id).meta)
    assert [d.skip for d in node.read(4, 0)] == ["the job no longer exists"] * 4


def _wipe(r: redis.Redis) -> None:
    """What a Redis restarted without persistence looks like: no keys, no scripts."""
    r.flushall()
    r.script_flush()  # every primary of a cluster


def _served_again(r: redis.Redis, node: NodeRedis) -> None:
    """The group is back (or the next read creates it), reading from the start: a
    new job's batch is delivered."""
    job = Client(r).map(tasks.square, [3])
    found = node.read(10, 0) or node.read(10, 0)
    assert job.id.encode() in [d.fields and d.fields[b"j"] for d in found]


def _held_entry(r: redis.Redis) -> tuple[NodeRedis, Delivery]:
    node = NodeRedis(r, ["default"], "n1")
    node.prepare()
    Client(r).map(tasks.square, [2])
    (delivery,) = node.read(1, 0)
    return node, delivery


@pytest.mark.cluster
def test_reclaim_recreates_a_lost_group(r: redis.Redis) -> None:
    node, _ = _held_entry(r)
    _wipe(r)
    assert node.reclaim(4, 0) == []
    _served_again(r, node)


@pytest.mark.cluster
def test_lease_refresh_and_hand_back_recreate_a_lost_group(r: redis.Redis) -> None:
    node, delivery = _held_entry(r)
    _wipe(r)
    node.refresh({delivery.queue: [delivery.entry_id]})
    _wipe(r)
    node.hand_back({delivery.queue: [delivery.entry_id]}, 1000)
    _served_again(r, node)


@pytest.mark.cluster
def test_recording_a_batch_whose_group_was_lost_drops_it_quietly(
    r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    node, delivery = _held_entry(r)
    fields = delivery.fields
    assert fields is not None
    _wipe(r)
    Client(r).map(tasks.square, [3])  # the stream exists again, its group not yet
    done = Completed(delivery, fields[b"j"].decode(), "0", b"entry", 1, 0)
    dead = Completed.dead_letter(delivery, "unreadable")
    with caplog.at_level(logging.WARNING):
        node.write([done, dead], 0.0)
    assert done.code == scripts.JOB_GONE
    assert done.acked and dead.acked
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    _served_again(r, node)


@pytest.mark.cluster
def test_a_stopping_node_unpublishes_after_its_group_was_lost(r: redis.Redis) -> None:
    node, _ = _held_entry(r)
    _wipe(r)
    node.unpublish()
