"""``taskfan enqueue`` through click's runner, against a real redis-server."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import redis

from producer import Client
from taskfan.keys import QueueKeys
from taskfan.options import CallMode
from tests.cli_support import clean_env, invoke, outcomes, write_lines
from tests.conftest import StartWorker

pytestmark = pytest.mark.usefixtures("clean_env")
__all__ = ["clean_env"]


def test_enqueue_prints_only_the_job_id(redis_url: str, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", ["1", "2", "", "3"])
    result = invoke("enqueue", "tests.tasks:square", "--input", str(path), "--redis-url", redis_url)
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    assert result.stdout == job_id + "\n"
    meta = Client.from_url(redis_url).job(job_id).meta()
    assert (meta.total, meta.codec, meta.mode, meta.fn_ref, meta.queue) == (
        3, "json", CallMode.ONE, "tests.tasks:square", "default",
    )  # fmt: skip


def test_settings_come_from_options_and_environment(redis_url: str, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.csv", ["a,b", "1,2", "3,4", "5,6"])
    env = {"TASKFAN_REDIS_URL": redis_url, "TASKFAN_QUEUE": "fromenv", "TASKFAN_BATCH_SIZE": "2"}
    result = invoke(
        "enqueue", "tests.tasks:add", "-i", str(path), "--result-ttl", "60", "--chunksize", "1",
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = Client.from_url(redis_url).job(result.stdout.strip()).meta()
    assert (meta.queue, meta.batch_size, meta.batches, meta.chunksize, meta.result_ttl) == (
        "fromenv", 2, 2, 1, 60,
    )  # fmt: skip
    assert meta.mode is CallMode.STAR  # csv rows are keyword arguments
    result = invoke("enqueue", "tests.tasks:add", "-i", str(path), "-q", "opt", env=env)
    assert Client.from_url(redis_url).job(result.stdout.strip()).meta().queue == "opt"


def test_a_malformed_line_stops_the_enqueue_and_leaves_nothing(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    lines = [str(i) for i in range(5000)]
    lines[4321] = '{"unterminated": '
    path = write_lines(tmp_path / "in.jsonl", lines)
    result = invoke(
        "enqueue", "tests.tasks:square", "-i", str(path), "--batch-size", "10",
        "--redis-url", redis_url,
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stdout == ""
    assert f"{path}:4322: not valid JSON" in result.stderr
    assert "Traceback" not in result.output
    # Hundreds of batches went out before line 4322; all of them were taken back.
    assert r.xlen(QueueKeys("default").stream) == 0
    assert r.zcard(QueueKeys("default").jobs) == 0
    assert not r.keys("taskfan:{j:*")


def test_stdin_and_the_lines_format(redis_url: str) -> None:
    result = invoke(
        "enqueue", "tests.tasks:identity", "--input", "-", "--format", "lines",
        "--redis-url", redis_url, input="a\nb c\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert Client.from_url(redis_url).job(result.stdout.strip()).meta().total == 2


def test_memory_stays_flat_for_large_inputs(redis_url: str, tmp_path: Path) -> None:
    pad = "x" * 100
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        for i in range(60_000):
            f.write(f'{{"i": {i}, "pad": "{pad}"}}\n')
    assert path.stat().st_size > 7_000_000
    tracemalloc.start()
    try:
        result = invoke(
            "enqueue", "tests.tasks:identity", "-i", str(path), "--redis-url", redis_url
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0, result.output
    assert Client.from_url(redis_url).job(result.stdout.strip()).meta().total == 60_000
    assert peak < 4_000_000, f"peak {peak} bytes for a {path.stat().st_size}-byte file"


def test_wait_writes_outcomes_in_input_order(
    redis_url: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker(processes=1)
    path = write_lines(tmp_path / "in.jsonl", [str(i) for i in range(1, 30)])
    out = tmp_path / "out.jsonl"
    result = invoke(
        "enqueue", "tests.tasks:fail_if_multiple_of_7", "-i", str(path), "--wait",
        "--batch-size", "4", "--output", str(out), "--progress", "--redis-url", redis_url,
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # some items failed
    assert result.stdout == ""
    assert "29/29 100% | 4 failed" in result.stderr
    got = outcomes(out.read_text())
    assert [o["index"] for o in got] == list(range(29))
    assert got[0] == {"index": 0, "ok": True, "result": 2}
    assert got[6]["ok"] is False
    assert got[6]["error"]["type"] == "ValueError"
    assert got[6]["error"]["message"] == "bad 7"
    assert "fail_if_multiple_of_7" in got[6]["error"]["traceback"]

    path = write_lines(tmp_path / "ok.jsonl", ["[1, 2]", '{"a": "x", "b": "y"}', "[[1], [2]]"])
    result = invoke(
        "enqueue", "tests.tasks:add", "-i", str(path), "--star", "--wait", "--redis-url", redis_url
    )
    assert result.exit_code == 0, result.output
    assert [o["result"] for o in outcomes(result.stdout)] == [3, "xy", [1, 2]]


def test_skip_invalid_records_bad_lines_as_failed_items(
    redis_url: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker(processes=1)
    path = write_lines(tmp_path / "in.jsonl", ["1", "oops", "3", "", "4", "[5,"])
    result = invoke(
        "enqueue", "tests.tasks:square", "-i", str(path), "--skip-invalid", "--wait",
        "--redis-url", redis_url,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    got = outcomes(result.stdout)
    assert [o["ok"] for o in got] == [True, False, True, True, False]
    assert [o.get("result") for o in got] == [1, None, 9, 16, None]
    assert got[1]["error"] == {
        "type": "InvalidInput",
        "message": f"{path}:2: not valid JSON: Expecting value (column 1)",
        "traceback": "",
    }
    assert got[4]["error"]["message"].startswith(f"{path}:6: not valid JSON")


def test_results_json_cannot_carry_become_errors(
    redis_url: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker(processes=1)
    path = write_lines(tmp_path / "in.jsonl", ["1", "2"])
    result = invoke(
        "enqueue", "tests.tasks:unpicklable_result", "-i", str(path), "--wait",
        "--redis-url", redis_url,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    got = outcomes(result.stdout)
    assert [o["error"]["type"] for o in got] == ["EncodeError", "EncodeError"]
    assert "json codec" in got[0]["error"]["message"]


def test_wait_timeout_exits_3(redis_url: str, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", ["1"])
    result = invoke(
        "enqueue", "tests.tasks:square", "-i", str(path), "--wait", "--timeout", "0.3",
        "--redis-url", redis_url,
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "timed out after 0.3s" in result.stderr


def test_a_misspelled_function_is_refused_before_anything_is_enqueued(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "in.jsonl", [str(i) for i in range(1000)])
    result = invoke("enqueue", "tests.tasks:sqaure", "-i", str(path), "--redis-url", redis_url)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "Error: module 'tests.tasks' has no attribute 'sqaure' (from 'tests.tasks:sqaure'); "
        "--no-check enqueues it anyway\n"
    )
    assert r.zcard(QueueKeys("default").jobs) == 0
    assert not r.keys("taskfan:{j:*")
    checked = invoke("enqueue", "tests.tasks:sqaure", "-i", str(path), "--no-check",
                     "--redis-url", redis_url)  # fmt: skip
    assert checked.exit_code == 0, checked.stderr
    assert r.zcard(QueueKeys("default").jobs) == 1


def test_a_function_the_producer_cannot_import_is_left_to_the_nodes(
    redis_url: str, r: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only nodes need the task package: a module the producer lacks, or whose
    import fails here (a dependency only nodes have), is not a reason to refuse."""
    (tmp_path / "needs_gpu.py").write_text("raise ImportError('no CUDA here')\n")
    monkeypatch.chdir(tmp_path)
    path = write_lines(tmp_path / "in.jsonl", ["1"])
    for ref in ("only_on_nodes.tasks:fn", "needs_gpu:fn"):
        result = invoke("enqueue", ref, "-i", str(path), "--redis-url", redis_url)
        assert result.exit_code == 0, result.stderr
    assert r.zcard(QueueKeys("default").jobs) == 2
