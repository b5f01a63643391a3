"""Threat: code run by unpickling (threats 1 and 3) without a secret. No-pickle
mode: nodes refuse pickle batches unread; json jobs work end to end; no-pickle
clients never unpickle."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client, Executor
from taskfan.errors import ConfigError, PickleRefused, TaskFailed
from taskfan.settings import Settings
from tests import tasks
from tests.cli_support import clean_env, invoke, outcomes, write_lines
from tests.conftest import StartWorker
from tests.helpers import dead_letters

__all__ = ["clean_env"]


class Trap:
    """Unpickling it calls tests.tasks.touch(path): a payload that runs code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (tasks.touch, (self.path,))


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if this process unpickles anything."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle.loads was called")

    monkeypatch.setattr(pickle, "loads", refuse)


def test_a_no_pickle_node_refuses_pickle_batches_without_reading_them(
    client: Client, r: redis.Redis, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker("--no-pickle")
    marker = tmp_path / "unpickled"
    job = client.map(tasks.identity, [Trap(str(marker)), 2, 3], batch_size=3)
    assert job.wait(timeout=60)
    failed = list(job.outcomes())
    assert [o.error.type for o in failed if o.error] == ["PickleRefused"] * 3
    assert failed[0].error is not None
    assert f"job {job.id} batch 0: uses the pickle codec" in failed[0].error.message
    assert not marker.exists()
    entries: Any = dead_letters(r, "default")
    [(_, letter)] = entries
    assert b"which this node refuses (--no-pickle" in letter[b"reason"]


@pytest.mark.usefixtures("no_unpickling")
def test_json_jobs_run_end_to_end_and_errors_travel_as_data(
    redis_url: str, start_worker: StartWorker
) -> None:
    start_worker(env={"TASKFAN_NO_PICKLE": "1"})
    client = Client.from_url(redis_url, no_pickle=True)
    assert client.codec.name == "json"
    job = client.map(tasks.fail_if_multiple_of_7, range(1, 16), batch_size=4)
    assert [o.value for o in job.outcomes(timeout=60) if o.ok] == [
        2 * x for x in range(1, 16) if x % 7
    ]
    errors = list(job.errors())
    assert [o.index for o in errors] == [6, 13]
    for outcome in errors:
        assert outcome.error is not None
        assert outcome.error.type == "ValueError" and outcome.error.exception is None
        assert "fail_if_multiple_of_7" in outcome.error.traceback
    assert list(client.map(tasks.square, range(5)).results(timeout=60)) == [0, 1, 4, 9, 16]
    assert sorted(o.index for o in job.as_completed()) == list(range(15))
    with Executor(client) as executor:
        assert executor.submit(tasks.add, 1, 2).result(timeout=60) == 3
        with pytest.raises(TaskFailed, match="bad 4") as info:
            executor.submit(tasks.fail, 4).result(timeout=60)
        assert "Remote traceback" in str(info.value)
        with pytest.raises(TaskFailed, match="bad 5"):
            list(executor.map(tasks.fail, [5], timeout=60))


def test_a_no_pickle_client_never_reads_a_pickle_job(
    redis_url: str, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_worker()
    job = Client.from_url(redis_url).map(tasks.square, [1, 2])
    assert job.wait(timeout=60)
    careful = Client.from_url(redis_url, no_pickle=True).job(job.id)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    for read in (careful.results, careful.outcomes, careful.as_completed):
        with pytest.raises(PickleRefused, match=f"job {job.id} uses the pickle codec"):
            list(read())
    with pytest.raises(PickleRefused):
        careful.retry_failed()


def test_no_pickle_settles_the_codec(redis_url: str) -> None:
    client = Client.from_url(redis_url, no_pickle=True)
    with pytest.raises(ConfigError, match="no_pickle"):
        Client.from_url(redis_url, codec="pickle", no_pickle=True)
    with pytest.raises(ConfigError, match="no_pickle"):
        client.map(tasks.square, [1], codec="pickle")
    assert Settings(no_pickle=True).codec == "json"
    assert Settings.from_env({"TASKFAN_NO_PICKLE": "yes"}).codec == "json"
    assert Client.from_settings(Settings(redis_url=redis_url, no_pickle=True)).no_pickle


@pytest.mark.usefixtures("clean_env")
def test_the_cli_runs_on_no_pickle_nodes_and_can_refuse_pickle_jobs(
    redis_url: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker("--no-pickle")
    path = write_lines(tmp_path / "in.jsonl", ["1", "2", '"x"'])
    done = invoke("enqueue", "tests.tasks:square", "-i", str(path), "--wait",
                  "--redis-url", redis_url)  # fmt: skip
    assert done.exit_code == 1
    lines = outcomes(done.stdout)
    assert [o.get("result") for o in lines] == [1, 4, None]
    assert lines[2]["error"]["type"] == "TypeError" and lines[2]["error"]["traceback"]
    pickled = Client.from_url(redis_url).map(tasks.square, [3])
    assert pickled.wait(timeout=60)  # refused by the node: its item failed
    refused = invoke(
        "results", pickled.id, "--redis-url", redis_url, env={"TASKFAN_NO_PICKLE": "1"}
    )
    assert refused.exit_code == 2
    assert f"job {pickled.id} uses the pickle codec" in refused.stderr
