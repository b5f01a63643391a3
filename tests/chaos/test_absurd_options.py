"""Chaos: batch entries with absurd option values, written straight to Redis
among good jobs. Every node stays up, every good item succeeds once, and each
absurd batch is dead-lettered with its reason (its items failed, ``BadOptions``)."""

from __future__ import annotations

import random
import time
from typing import Any, cast

import pytest
import redis

from producer import Client
from taskfan.keys import QueueKeys
from tests import tasks
from tests.chaos.census import census
from tests.chaos.conftest import Report
from tests.conftest import StartWorker

pytestmark = pytest.mark.chaos

STREAM = QueueKeys("default").stream
DEAD = QueueKeys("default").dead
GOOD = 4_000
#: raw 'o' fields out of bounds: (JSON, the option the reason must name)
ABSURD = [
    (b'{"hard_timeout":1e10}', "hard_timeout"),
    (b'{"hard_timeout":1e400}', "hard_timeout"),
    (b'{"timeout":1e10}', "timeout"),
    (b'{"timeout":-0.0}', "timeout"),
    (b'{"retries":1000000000,"backoff":0}', "retries"),
    (b'{"retries":true}', "retries"),
    (b'{"retries":3,"backoff":1e300,"backoff_max":1e300}', "backoff"),
    (b'{"backoff_max":' + b"9" * 400 + b"}", "backoff_max"),
    (b'{"retry_on":["' + b'","'.join([b"E"] * 5000) + b'"]}', "retry_on"),
]


def _rewrite(r: redis.Redis, job_id: str, **raw: bytes) -> None:
    """Replace the job's entries by copies with ``raw`` fields, as anyone who can
    write to Redis could (no secret configured)."""
    entries: Any = r.xrange(STREAM)
    for entry_id, fields in entries:
        if fields[b"j"] == job_id.encode():
            r.xdel(STREAM, entry_id)
            r.xadd(STREAM, cast(Any, {**fields, **{k.encode(): v for k, v in raw.items()}}))


def test_absurd_options_among_good_jobs_lose_nothing_and_kill_no_node(
    start_worker: StartWorker, redis_url: str, r: redis.Redis, report: Report
) -> None:
    rng = random.Random(13)
    client = Client.from_url(redis_url, codec="json")
    good = [client.map(tasks.square, range(GOOD // 2), batch_size=100)]
    absurd = []
    for raw, name in ABSURD * 3:
        job = client.map(tasks.square, [rng.randrange(100) for _ in range(5)], batch_size=5)
        _rewrite(r, job.id, o=raw)
        absurd.append((job, name))
    # Absurd but harmless: a chunksize of 2^40 items runs as one chunk per batch.
    huge_chunks = client.map(tasks.square, range(50), batch_size=25)
    _rewrite(r, huge_chunks.id, k=str(2**40).encode())
    good.append(client.map(tasks.square, range(GOOD // 2), batch_size=100))
    nodes = [start_worker("--no-pickle", processes=1) for _ in range(2)]
    began = time.monotonic()
    for job in [*good, huge_chunks]:
        assert job.wait(timeout=120), "\n".join(node.log() for node in nodes)
    failed_right = 0
    for job, name in absurd:
        outcomes = list(job.outcomes(timeout=60))
        errors = [o.error for o in outcomes if o.error is not None]
        assert len(errors) == 5, (name, outcomes)
        assert all(e.type == "BadOptions" and f"{name} must be" in e.message for e in errors)
        failed_right += len(errors)
    elapsed = time.monotonic() - began

    found = [census(r, job.id, expected=lambda i: i * i) for job in good]
    lost = sum(f.lost for f in found)
    duplicated = sum(f.duplicated for f in found)
    wrong = sum(f.wrong for f in found)
    letters = r.xlen(DEAD)
    alive = sum(node.proc.poll() is None for node in nodes)
    report(
        "absurd options among good jobs",
        good_items=GOOD,
        absurd_entries=len(absurd),
        dead_lettered=letters,
        items_failed=failed_right,
        lost=lost,
        duplicated=duplicated,
        wrong=wrong,
        nodes_alive=f"{alive}/{len(nodes)}",
        job_time=elapsed,
    )
    assert (lost, duplicated, wrong) == (0, 0, 0)
    assert sum(f.meta.ok for f in found) == GOOD
    assert letters == len(absurd)
    assert list(huge_chunks.results(timeout=10)) == [i * i for i in range(50)]
    assert alive == len(nodes), "\n".join(node.log() for node in nodes)
    assert not any("Traceback" in node.log() for node in nodes)
