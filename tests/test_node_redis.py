"""worker.redis_io.NodeRedis against a real server: the reads' job-state check."""

from __future__ import annotations

import redis

from producer import Client
from taskfan.keys import JobKeys
from tests import tasks
from worker.redis_io import NodeRedis


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
    assert r.info("commandstats")["cmdstat_hget"]["calls"] == 1
    now[0] += NodeRedis.ACTIVE_FOR
    assert [d.skip for d in node.read(2, 0)] == ["the job was cancelled"] * 2


def test_a_vanished_job_is_never_taken_for_active(r: redis.Redis) -> None:
    node = NodeRedis(r, ["default"], "n1", clock=lambda: 0.0)
    node.prepare()
    job = Client(r).map(tasks.square, range(4), batch_size=1)
    r.delete(JobKeys(job.id).meta)
    assert [d.skip for d in node.read(4, 0)] == ["the job no longer exists"] * 4
