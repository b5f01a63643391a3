"""``taskfan wait``, ``results`` and ``status`` on jobs enqueued by a client."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client
from taskfan import keys
from taskfan.keys import JobKeys, QueueKeys
from tests import tasks
from tests.cli_support import (
    REPO,
    clean_env,
    clean_environ,
    invoke,
    outcomes,
    sigint_default,
    taskfan,
)
from tests.conftest import StartWorker
from tests.helpers import wait_until

pytestmark = pytest.mark.usefixtures("clean_env")
__all__ = ["clean_env"]


@pytest.fixture
def json_client(redis_url: str) -> Client:
    return Client.from_url(redis_url, codec="json")


def test_wait_exit_codes(json_client: Client, redis_url: str, start_worker: StartWorker) -> None:
    good = json_client.map(tasks.square, range(10), batch_size=3)
    bad = json_client.map(tasks.fail_if_multiple_of_7, range(1, 10), batch_size=3)
    result = invoke("wait", good.id, "--timeout", "0.2", "--redis-url", redis_url)
    assert result.exit_code == 3, result.output  # no worker yet
    assert f"job {good.id}: 0/10 items done, 0 failed: timed out after 0.2s" in result.stderr
    start_worker(processes=1)
    result = invoke("wait", good.id, "--timeout", "30", "--progress", "--redis-url", redis_url)
    assert result.exit_code == 0, result.output
    assert "10/10 100% | 0 failed" in result.stderr
    result = invoke("wait", bad.id, "--redis-url", redis_url)
    assert result.exit_code == 1, result.output
    assert f"job {bad.id}: 9/9 items done, 1 failed" in result.stderr


def test_results_stream_outcomes_and_filter_failures(
    json_client: Client, redis_url: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker(processes=1)
    job = json_client.map(tasks.fail_if_multiple_of_7, range(1, 16), batch_size=4)
    result = invoke("results", job.id, "--timeout", "30", "--redis-url", redis_url)
    assert result.exit_code == 1, result.output
    got = outcomes(result.stdout)
    assert [o["index"] for o in got] == list(range(15))
    assert [o["result"] for o in got if o["ok"]] == [2 * x for x in range(1, 16) if x % 7]
    out = tmp_path / "failed.jsonl"
    result = invoke("results", job.id, "--failed-only", "-o", str(out), "--redis-url", redis_url)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert [(o["index"], o["error"]["message"]) for o in outcomes(out.read_text())] == [
        (6, "bad 7"),
        (13, "bad 14"),
    ]
    ok = json_client.map(tasks.square, [2])
    assert invoke("results", ok.id, "--redis-url", redis_url).exit_code == 0


def test_unknown_or_malformed_job_ids_are_one_line_errors(redis_url: str) -> None:
    for command in ("wait", "results", "status"):
        result = invoke(command, "0123456789abcdef", "--redis-url", redis_url)
        assert result.exit_code == 2, result.output
        assert result.stderr == (
            "Error: job 0123456789abcdef not found (never created, or its results expired)\n"
        )
        result = invoke(command, "a:b", "--redis-url", redis_url)
        assert result.exit_code == 2, result.output
        assert "invalid job id name 'a:b'" in result.stderr


@pytest.mark.cluster
def test_status_shows_queues_jobs_and_nodes(
    json_client: Client, redis_url: str, r: redis.Redis, start_worker: StartWorker
) -> None:
    worker = start_worker(processes=1)
    done = json_client.map(tasks.square, range(5))
    assert done.wait(timeout=30)
    wait_until(lambda: r.zcard(keys.NODES), message="the node's first heartbeat")
    worker.stop()
    waiting = Client.from_url(redis_url, "other", codec="json").map(
        tasks.square, range(7), batch_size=2
    )
    gone = json_client.map(tasks.square, range(3))
    r.delete(*JobKeys(gone.id).all())  # as if its results expired

    result = invoke("status", "--json", "--redis-url", redis_url)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    queues = {q["name"]: q for q in data["queues"]}
    assert queues["other"]["waiting"] == 4 and queues["other"]["in_flight"] == 0
    assert queues["default"]["length"] == 3  # the gone job's batches are still queued
    assert queues["default"]["jobs"] == 1
    jobs = {j["id"]: j for j in data["jobs"]}
    assert set(jobs) == {done.id, waiting.id}  # the gone job was pruned from the index
    assert r.zscore(QueueKeys("default").jobs, gone.id) is None
    assert (jobs[done.id]["status"], jobs[done.id]["done"], jobs[done.id]["total"]) == (
        "finished", 5, 5,
    )  # fmt: skip
    assert (jobs[waiting.id]["status"], jobs[waiting.id]["done"]) == ("queued", 0)
    assert data["nodes"] == []  # the stopped node took its record with it

    text = invoke("status", "--redis-url", redis_url).stdout
    assert "queues" in text and "jobs (newest first)" in text and "nodes" in text
    assert done.id in text and "finished" in text

    one = invoke("status", waiting.id, "--json", "--redis-url", redis_url)
    assert json.loads(one.stdout)["total"] == 7


@pytest.mark.cluster
def test_status_shows_live_nodes_and_batches_in_flight(
    json_client: Client, redis_url: str, r: redis.Redis, start_worker: StartWorker
) -> None:
    start_worker(processes=1)
    job = json_client.map(tasks.sleep, [0.3] * 4, batch_size=1)

    def busy() -> dict[str, Any] | None:
        data = json.loads(invoke("status", "--json", "--redis-url", redis_url).stdout)
        queue = data["queues"][0]
        return data if queue["in_flight"] and data["nodes"] else None

    data = wait_until(busy, timeout=20, message="a batch in flight")
    assert data is not None
    assert data["queues"][0]["consumers"] == 1
    node = data["nodes"][0]
    assert node["alive"] is True and node["processes"] == 1
    assert node["seconds_since_heartbeat"] < 10
    assert job.wait(timeout=30)


def test_ctrl_c_while_waiting_exits_130_and_leaves_the_job(
    json_client: Client, redis_url: str, r: redis.Redis
) -> None:
    job = json_client.map(tasks.square, range(3))
    proc = subprocess.Popen(
        sigint_default(taskfan("wait", job.id)), cwd=REPO,
        env=clean_environ(TASKFAN_REDIS_URL=redis_url), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(
            # blocked ("b") in XREAD: idle clients also show their last command
            lambda: any(c["cmd"] == "xread" and "b" in c["flags"] for c in r.client_list()),
            timeout=20,
            message="taskfan wait blocking on the job's events",
        )
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert err.strip() == "interrupted"
    assert job.status == "queued"


def test_a_cancelled_job_exits_4(json_client: Client, redis_url: str) -> None:
    job = json_client.map(tasks.square, range(3))
    assert job.cancel()
    for command in ("wait", "results"):
        result = invoke(command, job.id, "--redis-url", redis_url)
        assert result.exit_code == 4, result.output
        # with the counts: its three items have no outcome, and read as cancelled
        assert result.stderr == (
            f"Error: job {job.id} was cancelled: 0 items done, 0 failed, 3 cancelled\n"
        )
