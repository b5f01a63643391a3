"""The items of a cancelled job that have no recorded outcome (never run, let go,
killed by a hard cancel) read as ``cancelled`` outcomes, while recorded items keep
theirs: ``outcomes()``, ``as_completed()`` and ``taskfan results`` give every item
one outcome; ``results()`` raises JobCancelled at the first cancelled item;
``wait()`` raises JobCancelled with the counts; status counts them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from producer import Client
from taskfan import scripts
from taskfan.errors import JobCancelled
from taskfan.keys import JobKeys
from taskfan.outcomes import encode_result
from tests import tasks
from tests.cli_support import invoke
from tests.conftest import StartWorker
from tests.helpers import FAST_BEAT, entries_of, wait_until


@pytest.fixture
def json_client(redis_url: str) -> Client:
    return Client.from_url(redis_url, codec="json")


def _record(client: Client, job_id: str, index: int, start: int, values: list[int]) -> None:
    """Record batch ``index`` by hand, as a node would."""
    blob = client.codec.dumps([values, [], []])
    entry = encode_result(start, len(values), 0, [blob])
    code = scripts.record_batch(client.redis, JobKeys(job_id), index, entry, len(values), 0, 0.0)
    assert code == 1


def _shape(outcomes: list) -> list[tuple[int, bool, object, bool]]:
    return [(o.index, o.ok, o.value, o.cancelled) for o in outcomes]


def test_unrecorded_items_of_a_cancelled_job_read_as_cancelled(json_client: Client) -> None:
    """Batches 0 and 2 never ran, batch 1 and 3 were recorded (batches of 2)."""
    job = json_client.map(tasks.square, range(7), batch_size=2)
    _record(json_client, job.id, 1, 2, [4, 9])
    _record(json_client, job.id, 3, 6, [36])
    assert job.cancel()
    expected = [
        (0, False, None, True), (1, False, None, True), (2, True, 4, False),
        (3, True, 9, False), (4, False, None, True), (5, False, None, True),
        (6, True, 36, False),
    ]  # fmt: skip
    got = list(job.outcomes(timeout=10))
    assert _shape(got) == expected
    assert got[0].error is not None and got[0].error.type == "CancelledError"
    assert f"job {job.id} was cancelled" in got[0].error.message
    assert sorted(_shape(list(job.as_completed(timeout=10)))) == expected
    assert [o.index for o in job.errors(timeout=10)] == [0, 1, 4, 5]
    with pytest.raises(JobCancelled) as raised:
        job.wait(timeout=10)
    assert (raised.value.done, raised.value.failed, raised.value.cancelled) == (3, 0, 4)
    assert "3 items done, 0 failed, 4 cancelled" in str(raised.value)
    with pytest.raises(JobCancelled):
        list(job.results(timeout=10))
    assert job.meta().cancelled == 4


def test_the_values_before_the_first_cancelled_item_are_read(json_client: Client) -> None:
    job = json_client.map(tasks.square, range(4), batch_size=2)
    _record(json_client, job.id, 0, 0, [0, 1])
    assert job.cancel()
    read = []
    with pytest.raises(JobCancelled):
        for value in job.results(timeout=10):
            read.append(value)
    assert read == [0, 1]


def test_taskfan_results_writes_cancelled_items_and_exits_4(
    json_client: Client, redis_url: str
) -> None:
    job = json_client.map(tasks.square, range(3), batch_size=2)
    _record(json_client, job.id, 1, 2, [4])
    assert job.cancel()
    result = invoke("results", job.id, "--redis-url", redis_url)
    assert result.exit_code == 4, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(x["index"], x["ok"], x.get("cancelled", False)) for x in lines] == [
        (0, False, True), (1, False, True), (2, True, False),
    ]  # fmt: skip
    assert lines[0]["error"]["type"] == "CancelledError"
    assert lines[2]["result"] == 4
    assert f"job {job.id} was cancelled: 1 items done, 0 failed, 2 cancelled" in result.stderr
    shown = invoke("status", job.id, "--redis-url", redis_url)
    assert "2 cancelled" in shown.stdout, shown.stdout


def test_items_killed_by_a_hard_cancel_read_as_cancelled(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, tmp_path: Path
) -> None:
    """Item 0 finished, item 1 was running when killed, item 2 never ran."""
    client = Client.from_url(redis_url)
    worker = start_worker(processes=1, env=FAST_BEAT)
    never = str(tmp_path / "never")
    counters = [tmp_path / f"item{i}" for i in range(3)]
    release = tmp_path / "release"
    release.write_text("go")  # item 0 returns at once
    job = client.map(
        tasks.count_until,
        [(str(counters[0]), str(release)), *((str(c), never, 120.0) for c in counters[1:])],
        star=True, batch_size=1, chunksize=1,
    )  # fmt: skip
    wait_until(lambda: counters[1].exists() and job.progress().done == 1, 30, message=worker.log)
    assert job.cancel(terminate=True)
    wait_until(lambda: not entries_of(r, job.id), timeout=20, message=worker.log)
    got = list(job.outcomes(timeout=10))
    assert _shape(got) == [(0, True, 1, False), (1, False, None, True), (2, False, None, True)]
    with pytest.raises(JobCancelled) as raised:
        job.wait(timeout=10)
    assert (raised.value.done, raised.value.cancelled) == (1, 2)
