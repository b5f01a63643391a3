"""The core slice end to end: real redis-server, real ``taskfan worker`` processes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from typing import Any

import pytest
import redis

from producer import Client
from taskfan.errors import FunctionReferenceError, TaskFailed
from taskfan.keys import JobKeys, QueueKeys
from tests import tasks
from tests.conftest import StartWorker
from tests.helpers import wait_until
from tests.workers import REPO, WorkerProcess


def batches_logged(worker: WorkerProcess, job_id: str) -> set[int]:
    return {int(n) for n in re.findall(rf"job {job_id} batch (\d+):", worker.log())}


@pytest.mark.cluster
def test_results_come_back_in_input_order(client: Client, start_worker: StartWorker) -> None:
    start_worker()
    # Later items are quicker, so later batches tend to finish first.
    items = [0.02 * (i % 5) for i in range(40)][::-1]
    job = client.map(tasks.sleep, items, batch_size=3)
    assert list(job.results(timeout=60)) == items
    assert [o.index for o in job.outcomes()] == list(range(40))


@pytest.mark.cluster
def test_failing_items_do_not_stop_their_batch(client: Client, start_worker: StartWorker) -> None:
    start_worker()
    job = client.map(tasks.fail_if_multiple_of_7, range(1, 30), batch_size=10)
    assert job.wait(timeout=60)
    outcomes = list(job.outcomes())
    assert [o.index for o in outcomes] == list(range(29))
    failed = [o for o in outcomes if not o.ok]
    assert [o.index for o in failed] == [6, 13, 20, 27]
    for outcome in failed:
        assert outcome.error is not None
        assert outcome.error.type == "ValueError"
        assert str(outcome.index + 1) in outcome.error.message
        assert "fail_if_multiple_of_7" in outcome.error.traceback
    assert [o.value for o in outcomes if o.ok] == [2 * x for x in range(1, 30) if x % 7]
    assert job.progress() == (29, 4, 29)
    with pytest.raises(TaskFailed) as info:
        list(job.results())
    assert info.value.index == 6
    assert info.value.type_name == "ValueError"
    assert "Remote traceback" in str(info.value)


@pytest.mark.cluster
def test_empty_and_single_item_jobs(client: Client, start_worker: StartWorker) -> None:
    empty = client.map(tasks.square, [])
    assert empty.wait(timeout=5)
    assert list(empty.results()) == []
    assert empty.progress() == (0, 0, 0)
    assert empty.status == "finished"
    start_worker()
    one = client.map(tasks.square, [7])
    assert list(one.results(timeout=60)) == [49]
    submitted = client.submit(tasks.add, 2, b=3)
    assert list(submitted.results(timeout=60)) == [5]


@pytest.mark.slow
@pytest.mark.cluster
def test_a_hundred_thousand_items_through_a_worker_process(
    client: Client, start_worker: StartWorker
) -> None:
    start_worker()
    job = client.map(tasks.square, range(100_000))
    assert list(job.results(timeout=120)) == [x * x for x in range(100_000)]
    meta = job.meta()
    assert (meta.ok, meta.failed, meta.status) == (100_000, 0, "finished")


@pytest.mark.cluster
def test_two_nodes_share_a_job_and_every_item_has_one_outcome(
    client: Client, start_worker: StartWorker, r: redis.Redis
) -> None:
    nodes = [start_worker(processes=1), start_worker(processes=1)]
    job = client.map(tasks.sleep, [0.01] * 400, batch_size=5)
    assert job.wait(timeout=120)
    meta = job.meta()
    assert (meta.ok, meta.failed, meta.batches_done, meta.batches) == (400, 0, 80, 80)
    assert r.hlen(JobKeys(job.id).results) == 80
    assert sum(1 for _ in job.outcomes()) == 400
    for node in nodes:
        assert node.stop() == 0
    seen = [batches_logged(node, job.id) for node in nodes]
    assert all(seen), "each node should have run some batches"
    assert seen[0] | seen[1] == set(range(80))


@pytest.mark.cluster
def test_reattach_from_another_process(
    client: Client, start_worker: StartWorker, redis_url: str
) -> None:
    start_worker()
    job = client.map(tasks.square, range(50), batch_size=7)
    code = (
        "import json, sys; from producer import Client; "
        f"job = Client.from_url({redis_url!r}).job({job.id!r}); "
        "print(json.dumps(list(job.results(timeout=60))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [x * x for x in range(50)]


@pytest.mark.cluster
def test_sigterm_mid_job_loses_nothing(
    client: Client, start_worker: StartWorker, r: redis.Redis
) -> None:
    first = start_worker(processes=2)
    job = client.map(tasks.sleep, [0.02] * 300, batch_size=10)
    wait_until(lambda: job.progress().done >= 40, timeout=60, message="first batches done")
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0
    assert "stopped" in first.log()
    assert not job.wait(timeout=0.1) or job.progress().done == 300
    # What the stopped node had started, it finished and recorded; what it had
    # only read, it handed back: idle for longer than any lease, so others take
    # it at once.
    held: Any = r.xpending_range(QueueKeys("default").stream, "workers", "-", "+", 100)
    assert all(entry["time_since_delivered"] >= 60_000 for entry in held), held
    start_worker(processes=2)
    assert job.wait(timeout=120)
    assert job.progress() == (300, 0, 300)
    assert r.hlen(JobKeys(job.id).results) == 30


@pytest.mark.cluster
def test_burst_worker_exits_once_the_queue_is_empty(
    client: Client, start_worker: StartWorker
) -> None:
    job = client.map(tasks.square, range(100), batch_size=10)
    worker = start_worker("--burst")
    assert worker.wait(timeout=60) == 0
    assert job.progress() == (100, 0, 100)


@pytest.mark.cluster
def test_a_crashing_item_fails_alone(client: Client, start_worker: StartWorker) -> None:
    start_worker()
    items = list(range(40))
    job = client.map(tasks.crash_on, items, batch_size=20, chunksize=10)
    assert job.wait(timeout=120)
    outcomes = list(job.outcomes())
    failed = {o.index: o.error.message for o in outcomes if o.error is not None}
    assert set(failed) == {13, 31}, failed
    assert "signal 11" in failed[13], failed
    assert "exit code 3" in failed[31], failed
    assert [o.value for o in outcomes if o.ok] == [x for x in items if x not in (13, 31)]


@pytest.mark.cluster
def test_a_result_the_codec_cannot_carry_fails_only_its_item(
    client: Client, start_worker: StartWorker
) -> None:
    start_worker()
    job = client.map(tasks.unpicklable_result, [1, 2, 3])
    outcomes = list(job.outcomes(timeout=60))
    assert [o.ok for o in outcomes] == [False, False, False]
    assert all("cannot be encoded" in o.error.message for o in outcomes if o.error)
    json_job = client.map(tasks.identity, [{"a": 1}, [1, 2]], codec="json")
    assert list(json_job.results(timeout=60)) == [{"a": 1}, [1, 2]]


@pytest.mark.cluster
def test_functions_that_cannot_travel_are_refused_at_enqueue(client: Client) -> None:
    with pytest.raises(FunctionReferenceError, match="lambda"):
        client.map(lambda x: x, [1])

    def nested(x: int) -> int:
        return x

    with pytest.raises(FunctionReferenceError, match="nested"):
        client.map(nested, [1])
    with pytest.raises(FunctionReferenceError, match="module:function"):
        client.map("no_colon_here", [1])
