"""The node registry (``taskfan nodes``), ``status`` (tables, --watch, --json),
``jobs --state`` and ``inspect``."""

from __future__ import annotations

import dataclasses
import functools
import json
import pickle
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client
from producer.ops import overview, peek
from producer.ops.status import age, bar, watch_loop
from taskfan.errors import BrokerUnavailable
from taskfan.keys import NODES, JobKeys
from taskfan.meta import JobMeta, JobState
from taskfan.options import CallMode
from tests import tasks
from tests.cli_support import REPO, clean_env, clean_environ, invoke, sigint_default, taskfan
from tests.conftest import StartWorker
from tests.helpers import wait_until

BEAT = {"TASKFAN_HEARTBEAT_INTERVAL": "0.2", "TASKFAN_VISIBILITY_TIMEOUT": "2"}

pytestmark = pytest.mark.usefixtures("clean_env")
__all__ = ["clean_env"]


def nodes_json(redis_url: str) -> list[dict[str, Any]]:
    result = invoke("nodes", "--json", "--redis-url", redis_url)
    assert result.exit_code == 0, result.output
    data: list[dict[str, Any]] = json.loads(result.stdout)
    return data


@pytest.mark.cluster
def test_the_node_registry_shows_what_each_node_did_and_drops_dead_nodes(
    client: Client, start_worker: StartWorker, redis_url: str, r: redis.Redis
) -> None:
    doomed = start_worker("--name", "doomed", env=BEAT, processes=1)
    keeper = start_worker("--name", "keeper", "--queue", "other", env=BEAT, processes=2)
    job = client.map(tasks.fail_if_multiple_of_7, range(1, 71), batch_size=10)
    assert job.wait(timeout=60)

    def settled() -> list[dict[str, Any]] | None:
        found = nodes_json(redis_url)
        done = sum(n["items_done"] + n["items_failed"] for n in found)
        # A node counts items as it finishes them, and lets a batch go once it is
        # recorded and acknowledged: a heartbeat between the two shows it in flight.
        idle = all(n["in_flight"] == 0 for n in found)
        return found if len(found) == 2 and done == 70 and idle else None

    found = wait_until(settled, timeout=30, message="both nodes' records with every item")
    assert found is not None
    by_id = {n["id"]: n for n in found}
    assert set(by_id) == {"doomed", "keeper"}
    assert by_id["keeper"]["queues"] == ["default", "other"]
    assert by_id["keeper"]["processes"] == 2 and by_id["keeper"]["pid"] == keeper.pid
    assert sum(n["items_failed"] for n in found) == 10  # 7, 14, ..., 70
    assert sum(n["batches_done"] for n in found) == 7
    assert sum(n["batches_failed"] for n in found) == 7  # each batch of 10 holds a 7x
    for node in found:
        assert node["host"] and node["version"] and node["chunksize"] == "auto"
        assert node["seconds_since_heartbeat"] < 5 and node["started_at"] <= node["last_heartbeat"]
        assert (node["in_flight"], node["busy"], node["jobs"], node["pool_restarts"]) == (
            0,
            0,
            [],
            0,
        )
        assert node["rate"] >= 0
    assert any(n["rate"] > 0 for n in found)  # items within the last minute

    status = json.loads(invoke("status", "--json", "--redis-url", redis_url).stdout)
    consumers = {q["name"]: q["consumers"] for q in status["queues"]}
    assert consumers == {"default": 2, "other": 1}

    doomed.signal(signal.SIGKILL)
    doomed.wait()
    # Its record expires three heartbeats later; then it leaves the view and the index.
    wait_until(lambda: [n["id"] for n in nodes_json(redis_url)] == ["keeper"], timeout=20,
               message="the killed node dropping out")  # fmt: skip
    assert r.zscore(NODES, "doomed") is None
    status = json.loads(invoke("status", "--json", "--redis-url", redis_url).stdout)
    assert {q["name"]: q["consumers"] for q in status["queues"]} == {"default": 1, "other": 1}
    text = invoke("nodes", "--redis-url", redis_url).stdout
    assert "keeper" in text and "doomed" not in text and "RATE" in text


def test_node_records_keep_queue_names_whole_and_show_rq_queues(
    start_worker: StartWorker, redis_url: str
) -> None:
    start_worker("--name", "lister", "--queue", "a,b", "--queue", "c",
                 "--rq-queue", "emails", env=BEAT, processes=1)  # fmt: skip
    found = wait_until(lambda: nodes_json(redis_url), timeout=20, message="the node's record")
    assert found is not None
    (node,) = found
    assert node["queues"][-2:] == ["a,b", "c"]  # a comma inside a name does not split it
    assert node["rq_queues"] == ["emails"]
    text = invoke("nodes", "--redis-url", redis_url).stdout
    row = next((line for line in text.splitlines() if "lister" in line), "")
    assert row.rstrip().endswith("a,b,c,rq:emails"), text


def test_a_busy_node_says_which_jobs_it_works_on(
    client: Client, start_worker: StartWorker, redis_url: str
) -> None:
    start_worker(env=BEAT, processes=1)
    job = client.map(tasks.sleep, [0.5] * 6, batch_size=1)

    def busy() -> dict[str, Any] | None:
        found = nodes_json(redis_url)
        return found[0] if found and found[0]["jobs"] and found[0]["busy"] else None

    node = wait_until(busy, timeout=30, message="a node record naming the job and a chunk")
    assert node is not None
    assert node["jobs"] == [job.id] and node["in_flight"] >= 1
    text = invoke("nodes", "--redis-url", redis_url).stdout
    assert "working on" in text and job.id in text
    assert job.wait(timeout=60)


def test_job_rate_and_eta() -> None:
    meta = JobMeta(
        id="j", queue="q", fn_ref="m:f", codec="json", mode=CallMode.ONE,
        state=JobState.ACTIVE, sealed=True, total=1000, batches=10, ok=390, failed=10,
        batches_done=4, batch_size=100, chunksize=0, result_ttl=0, created_at=0.0,
        finished_at=None,
    )  # fmt: skip
    # 4 batches recorded at t = 100, 101, 102, 103 s (stream ids are milliseconds).
    events = [(f"{t * 1000}-0".encode(), {b"b": b"1"}) for t in (103, 102, 101, 100)]
    row = overview.job_status(meta, 104.0, events)
    assert row["rate"] == 75.0  # 3 batches of 100 items after the first, over 4 s
    assert row["eta_seconds"] == 8.0 and row["progress"] == 0.4
    stalled = overview.job_status(meta, 160.0, events)
    assert stalled["rate"] == 5.0  # nothing recorded for a minute: the rate falls
    ended = dataclasses.replace(
        meta, state=JobState.FINISHED, finished_at=50.0, ok=990, batches_done=10
    )
    finished = overview.job_status(ended, 999.0, events)
    assert (finished["rate"], finished["eta_seconds"], finished["progress"]) == (20.0, None, 1.0)
    assert bar(0.5) == "[#####.....]  50%" and bar(None) == "-"
    assert (age(59), age(600), age(7300), age(200000)) == ("59s", "10m", "2.0h", "2.3d")


def test_jobs_filters_by_state_and_status_watch_redraws(
    client: Client, start_worker: StartWorker, redis_url: str
) -> None:
    start_worker()
    ok = client.map(tasks.square, [1, 2])
    failed = client.map(tasks.fail, [1])
    assert ok.wait(timeout=60) and failed.wait(timeout=60)
    waiting = Client.from_url(redis_url, queue="nobody").map(tasks.square, [1])
    cancelled = Client.from_url(redis_url, queue="nobody").map(tasks.square, [1])
    cancelled.cancel()

    def ids(*args: str) -> list[str]:
        result = invoke("jobs", *args, "--json", "--redis-url", redis_url)
        assert result.exit_code == 0, result.output
        return [j["id"] for j in json.loads(result.stdout)]

    assert ids() == [cancelled.id, waiting.id, failed.id, ok.id]  # newest first
    assert ids("--state", "failed") == [failed.id]
    assert ids("--state", "finished") == [failed.id, ok.id]
    assert ids("--state", "queued", "--state", "cancelled") == [cancelled.id, waiting.id]
    assert ids("--state", "active") == [waiting.id]
    assert ids("--queue", "default", "--limit", "1") == [failed.id]
    text = invoke("jobs", "--redis-url", redis_url).stdout
    assert "PROGRESS" in text and "[##########] 100%" in text and "ETA" in text
    bad = invoke("jobs", "--state", "lost", "--redis-url", redis_url)
    assert bad.exit_code == 2 and "'lost' is not one of" in bad.stderr

    proc = subprocess.Popen(
        sigint_default(taskfan("status", "--watch", "--interval", "0.2")), cwd=REPO,
        env=clean_environ(TASKFAN_REDIS_URL=redis_url), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        frames = 0
        for line in proc.stdout:  # not a terminal: one snapshot after another
            frames += line.startswith("--- ")
            if frames == 3:
                break
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0  # Ctrl-C is how --watch ends
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert frames == 3


@pytest.mark.cluster
def test_inspect_shows_options_counters_and_the_first_failures(
    client: Client, start_worker: StartWorker, redis_url: str
) -> None:
    start_worker()
    job = client.map(tasks.fail_if_multiple_of_7, range(1, 30), batch_size=5, retries=1,
                     backoff=0.01)  # fmt: skip
    assert job.wait(timeout=60)
    result = invoke("inspect", job.id, "--failures", "2", "--json", "--redis-url", redis_url)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["ok"], data["failed"], data["total"], data["batches"]) == (25, 4, 29, 6)
    assert data["options"]["retries"] == 1 and data["codec"] == "pickle"
    assert [(f["index"], f["type"], f["message"], f["attempts"]) for f in data["failures"]] == [
        (6, "ValueError", "bad 7", 2), (13, "ValueError", "bad 14", 2),
    ]  # fmt: skip
    assert 'raise ValueError(f"bad {x}")' in data["failures"][0]["traceback"]
    text = invoke("inspect", job.id, "--redis-url", redis_url).stdout
    assert "first 4 failures" in text and "item 27 (2 attempts): ValueError: bad 28" in text
    assert "retries=1" in text and "Traceback (most recent call last)" in text
    missing = invoke("inspect", "nosuchjob", "--redis-url", redis_url)
    assert missing.exit_code == 2 and "nosuchjob not found" in missing.stderr


def test_failures_are_read_without_running_pickled_code(
    client: Client, r: redis.Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.write_text, (marker, "pwned"))

    class Chained:  # calls what another call returned
        def __reduce__(self) -> tuple[Any, ...]:
            return (functools.partial(Path.write_text, marker), ("pwned",))

    errors = [[0, "ValueError", "bad", "Traceback ...", Evil(), Chained()]]
    blob = pickle.dumps([[None], errors, []])
    codec = peek.SafeCodec("pickle")
    _, errors, _ = codec.loads(blob)
    assert not marker.exists()
    assert errors[0][:4] == [0, "ValueError", "bad", "Traceback ..."]
    assert isinstance(errors[0][4], peek.Opaque) and "write_text" in repr(errors[0][4])
    pickle.loads(blob)  # the real unpickler would have run it
    assert marker.read_text() == "pwned"
    with pytest.raises(pickle.UnpicklingError):
        codec.loads(b"\x80\x05P0\n.")  # a persistent id

    job = client.map(tasks.square, [1])  # a job whose batch 0 holds that chunk
    from taskfan import scripts
    from taskfan.outcomes import encode_result

    marker.unlink()
    scripts.record_batch(r, JobKeys(job.id), 0, encode_result(0, 1, 1, [blob]), 0, 1, 0.0)
    meta = client.job(job.id).meta()
    (failure,) = peek.failures(r, meta, 5)
    assert failure.error is not None and failure.error.message == "bad"
    assert not marker.exists()


def test_watch_shows_an_unreadable_snapshot_and_goes_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    said: Iterator[Exception | str] = iter(
        [BrokerUnavailable("connecting to redis://x: Redis is unreachable"), "frame 2"]
    )

    def draw() -> str:
        step = next(said, None)
        if step is None:
            raise KeyboardInterrupt  # Ctrl-C ends the watch
        if isinstance(step, Exception):
            raise step
        return step

    watch_loop(draw, 0.0, "text")
    out = capsys.readouterr().out
    assert "error: connecting to redis://x: Redis is unreachable" in out
    assert out.index("error:") < out.index("frame 2") and out.count("--- ") == 2
