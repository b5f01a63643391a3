"""Chaos: the process running ``retry_failed`` is SIGKILLed at each of its Redis
round trips in turn, while two nodes serve the queue (issue 14, items 3 and 9).

Each cut gets a fresh finished job with failed items. After the kill the job
must settle, as it was (finished, its failures counted) or fully in its new
round; a retry started afterwards completes it. Then every item has exactly
one outcome per round, no result field belongs to a round that never opened,
the counters agree with the outcomes, and every key of the job expires.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client
from producer.job import Job
from taskfan.codec import get_codec
from taskfan.keys import QueueKeys
from taskfan.meta import JobMeta
from taskfan.outcomes import ResultEntry, iter_outcomes
from tests import tasks
from tests.chaos.conftest import Report
from tests.conftest import StartWorker
from tests.faults import kill_retry_at
from tests.helpers import wait_until

pytestmark = pytest.mark.chaos

ITEMS = 2_000
BATCH = 50
STREAM = QueueKeys("default").stream


def _fails(i: int) -> int:
    return 1 if i % 10 == 3 else 0  #: every tenth item fails its first call


@dataclass(frozen=True)
class RoundCensus:
    lost: int  #: items with no outcome in the job's own batches
    duplicated: int  #: outcomes beyond one per item and round, recordings beyond one per field
    stray: int  #: results fields of rounds that never opened
    failed: int  #: items whose merged outcome is a failure


def census_rounds(r: redis.Redis, job: Job) -> RoundCensus:
    raw: Any = r.hgetall(job.keys.meta)
    meta = JobMeta.parse(job.id, raw)
    codec = get_codec(meta.codec)
    rounds: dict[str, Counter[int]] = {}
    results: Any = r.hgetall(job.keys.results)
    opened = {f for index in range(meta.batches) for f in meta.result_fields(index)}
    for field, data in results.items():
        name = field.decode()
        where = f"job {job.id} results field {name}"
        seen = rounds.setdefault(name.partition(".")[2] or "0", Counter())
        for outcome in iter_outcomes(ResultEntry.parse(data, where), codec, where):
            seen[outcome.index] += 1
    events: Any = r.xrange(job.keys.events)
    recordings = Counter(fields[b"b"] for _, fields in events if b"b" in fields)
    base = rounds.get("0", Counter())
    return RoundCensus(
        lost=sum(1 for index in range(meta.total) if not base[index]),
        duplicated=sum(n - 1 for seen in rounds.values() for n in seen.values())
        + sum(n - 1 for n in recordings.values()),
        stray=sum(1 for field in results if field.decode() not in opened),
        failed=sum(not o.ok for o in job.outcomes()),
    )


def _settled(r: redis.Redis, job: Job) -> bool:
    entries: Any = r.xrange(STREAM)
    return job.status == "finished" and not any(e.get(b"j") == job.id.encode() for _, e in entries)


def test_a_retry_killed_at_every_round_trip_loses_nothing(
    start_worker: StartWorker, redis_url: str, r: redis.Redis, tmp_path: Path, report: Report
) -> None:
    for _ in range(2):
        start_worker(processes=1)
    client = Client.from_url(redis_url)
    at, as_it_was, in_new_round = 1, 0, 0  #: the cut, and where the cuts left their job
    totals = Counter[str]()
    while True:
        folder = tmp_path / f"cut{at}"
        folder.mkdir()
        items = [(str(folder / f"c{i}"), _fails(i)) for i in range(ITEMS)]
        job = client.map(tasks.fail_times, items, star=True, batch_size=BATCH)
        assert job.wait(timeout=120)
        line = kill_retry_at(redis_url, job.id, at)
        where = f"retry SIGKILLed after round trip {at}"
        wait_until(lambda: _settled(r, job), timeout=60, message=where)  # noqa: B023
        if line.startswith("paused"):  # a cut: where did it leave the job?
            in_new_round += job.meta().retry_round > 0
            as_it_was += job.meta().retry_round == 0
        if job.progress().failed:
            assert client.job(job.id).retry_failed() == ITEMS // 10, where
            assert job.wait(timeout=120), where
        found = census_rounds(r, job)
        totals.update(lost=found.lost, duplicated=found.duplicated, stray=found.stray,
                      failed=found.failed, ended=job.status == "finished",
                      untimed=sum(r.ttl(key) <= 0 for key in job.keys.all()))  # fmt: skip
        if line.startswith("done"):
            break
        assert line.startswith("paused"), line
        at += 1
    report(
        "retry_failed SIGKILLed at each round trip, 2 nodes",
        items=f"{ITEMS} per job ({ITEMS // 10} failed)",
        cuts=at - 1,
        as_it_was=as_it_was,
        in_new_round=in_new_round,
        jobs_ended=f"{totals['ended']}/{at}",
        lost=totals["lost"],
        duplicated=totals["duplicated"],
        stray_rounds=totals["stray"],
        failed_left=totals["failed"],
        keys_without_ttl=totals["untimed"],
    )
    assert at > 5
    assert totals["ended"] == at
    assert (totals["lost"], totals["duplicated"], totals["stray"]) == (0, 0, 0)
    assert (totals["failed"], totals["untimed"]) == (0, 0)
