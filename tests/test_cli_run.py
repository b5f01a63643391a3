"""``taskfan run`` as a real process: embedded or configured Redis, a local worker,
and nothing left running afterwards, also after Ctrl-C."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from examples.tasks import collatz_steps
from taskfan import keys
from taskfan.keys import JobKeys, QueueKeys
from tests.cli_support import (
    REPO,
    SIGINT_IGNORED,
    clean_environ,
    descendants,
    job_ids,
    outcomes,
    read_until,
    run_taskfan,
    running,
    sigint_default,
    some_batches_done,
    start_run,
    write_lines,
)
from tests.helpers import wait_until

EMBEDDED = re.compile(
    r"no Redis configured: using an embedded redis-server \S+ on the unix socket (\S+) "
)


def embedded(socket: str) -> redis.Redis:
    """A client of a run's embedded server, at its unix socket."""
    return redis.Redis(unix_socket_path=socket)


def server_is_gone(socket: str) -> bool:
    try:  # no retries: redis-py's default backoff would spend seconds on a closed socket
        with redis.Redis(
            unix_socket_path=socket, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
        ) as client:
            client.ping()
    except redis.ConnectionError:
        return True
    return False


def run_workers_alive(run_pid: int) -> list[int]:
    """Worker processes started by the ``taskfan run`` whose pid was ``run_pid``."""
    alive = []
    for proc in Path("/proc").iterdir():
        try:
            if f"run-{run_pid}".encode() in (proc / "cmdline").read_bytes():
                alive.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return alive


def test_run_with_no_redis_embeds_one_and_stops_it(tmp_path: Path) -> None:
    """The README's main command, on the shipped example."""
    out = tmp_path / "out.jsonl"
    done = run_taskfan(
        "run", "examples.tasks:collatz_steps", "--input", "examples/inputs.jsonl",
        "--processes", "2", "--output", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    match = EMBEDDED.search(done.stderr)
    assert match, done.stderr
    numbers = [
        json.loads(line) for line in (REPO / "examples/inputs.jsonl").read_text().splitlines()
    ]
    got = outcomes(out.read_text())
    assert got == [
        {"index": i, "ok": True, "result": collatz_steps(n)} for i, n in enumerate(numbers)
    ]
    assert server_is_gone(match.group(1))
    assert not run_workers_alive(_pid_of(done))


def _pid_of(done: subprocess.CompletedProcess[str]) -> int:
    found = re.search(r"taskfan worker run-(\d+) on", done.stderr)
    assert found, done.stderr
    return int(found.group(1))


def test_run_uses_the_configured_redis(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.txt", ["1", "7", "8"])
    done = run_taskfan(
        "run", "tests.tasks:fail_if_multiple_of_7", "-i", str(path), "--format", "jsonl", "-p", "1",
        env=clean_environ(TASKFAN_REDIS_URL=redis_url),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # one item failed
    assert f"using Redis at {redis_url}" in done.stderr
    assert [o["ok"] for o in outcomes(done.stdout)] == [True, False, True]
    (job_id,) = job_ids(r)
    assert r.hget(JobKeys(job_id).meta, "state") == b"finished"  # results stay in Redis
    assert r.zcard(keys.NODES) == 0  # the local worker stopped and left
    assert not run_workers_alive(_pid_of(done))


def test_run_passes_its_log_options_to_the_local_worker(redis_url: str, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", ["1", "2"])
    done = run_taskfan(
        "run", "tests.tasks:square", "-i", str(path), "-p", "1",
        "--log-level", "INFO", "--log-format", "json",
        env=clean_environ(TASKFAN_REDIS_URL=redis_url),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(record["logger"].startswith("worker.") for record in records), done.stderr


def test_run_refuses_a_function_it_cannot_import() -> None:
    done = run_taskfan("run", "examples.tasks:nope", "-i", "examples/inputs.jsonl")
    assert done.returncode == 2
    assert done.stderr == (
        "Error: module 'examples.tasks' has no attribute 'nope' (from 'examples.tasks:nope')\n"
    )


def task_folder(tmp_path: Path) -> Path:
    """A folder outside the repository holding a task module, ``far_tasks``."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "far_tasks.py").write_text("def triple(x):\n    return 3 * x\n")
    return folder


@pytest.mark.parametrize("how", ["option", "environment"])
def test_run_imports_task_modules_from_path(tmp_path: Path, how: str) -> None:
    """The message of a failed import says "pass --path": ``run`` takes it, and
    TASKFAN_PATH, for its own check and for its local worker."""
    folder = task_folder(tmp_path)
    path = write_lines(tmp_path / "in.jsonl", ["1", "2"])
    args = ["run", "far_tasks:triple", "-i", str(path), "-p", "1"]
    if how == "option":
        done = run_taskfan(*args, "--path", str(folder))
    else:
        done = run_taskfan(*args, env=clean_environ(TASKFAN_PATH=str(folder)))
    assert done.returncode == 0, done.stderr
    assert [o["result"] for o in outcomes(done.stdout)] == [3, 6]


def busy_embedded_run(
    popen: list[subprocess.Popen[str]], slow_input: Path
) -> tuple[subprocess.Popen[str], str, set[int]]:
    """A ``taskfan run`` on the embedded server, a batch done: the process, the
    server's socket, and the processes it started."""
    proc = start_run(popen, "-i", str(slow_input), env=clean_environ())
    socket = read_until(proc, EMBEDDED).group(1)
    with embedded(socket) as client:
        wait_until(lambda: some_batches_done(client), timeout=30, message="a batch done")
    started = descendants(proc.pid)  # redis-server, the worker, its forkserver and pool
    assert len(running(started)) >= 3, started
    return proc, socket, started


def all_ended(started: set[int], socket: str) -> None:
    wait_until(
        lambda: not running(started), timeout=15, message=lambda: f"{running(started)} to end"
    )
    assert server_is_gone(socket)


def test_children_that_get_ctrl_c_have_the_default_handler_however_started() -> None:
    """The Ctrl-C tests pass when the suite itself runs with SIGINT ignored."""
    probe = [
        sys.executable, "-c",
        "import signal; h = signal.getsignal(signal.SIGINT); print(getattr(h, 'name', h))",
    ]  # fmt: skip

    def handler_of(command: list[str]) -> str:
        done = subprocess.run(
            [*SIGINT_IGNORED, *command],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        return done.stdout.strip()

    assert handler_of(probe) == "SIG_IGN"  # what a child inherits
    assert handler_of(sigint_default(probe)) == "<built-in function default_int_handler>"


def test_ctrl_c_mid_job_leaves_no_process_behind(
    slow_input: Path, popen: list[subprocess.Popen[str]]
) -> None:
    proc, socket, started = busy_embedded_run(popen, slow_input)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 130
    assert "interrupted (job " in (proc.stderr.read() if proc.stderr else "")
    all_ended(started, socket)


def test_a_sigkilled_run_takes_its_worker_and_embedded_server_with_it(
    slow_input: Path, popen: list[subprocess.Popen[str]]
) -> None:
    proc, socket, started = busy_embedded_run(popen, slow_input)
    proc.kill()  # no chance to stop anything itself
    proc.wait(10)
    all_ended(started, socket)


def test_sigterm_with_a_configured_redis_keeps_the_job_for_other_nodes(
    slow_input: Path, popen: list[subprocess.Popen[str]], redis_url: str, r: redis.Redis
) -> None:
    proc = start_run(popen, "-i", str(slow_input), env=clean_environ(TASKFAN_REDIS_URL=redis_url))
    wait_until(lambda: some_batches_done(r), timeout=30, message="a batch done")
    started = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 130
    wait_until(
        lambda: not running(started), timeout=15, message=lambda: f"{running(started)} to end"
    )
    (job_id,) = job_ids(r)
    assert r.hget(JobKeys(job_id).meta, "state") == b"active"
    assert r.xlen(QueueKeys("default").stream) > 0  # the rest waits for other nodes
    # Handed back, not left leased: nothing is pending with a live lease.
    assert r.zcard(keys.NODES) == 0


def test_run_started_in_the_background_still_stops_its_worker_cold(
    tmp_path: Path, popen: list[subprocess.Popen[str]], redis_url: str, r: redis.Redis
) -> None:
    """Started with SIGINT ignored, run's worker keeps ignoring it, so the SIGINT
    run sends for a cold stop does nothing: a second SIGTERM must do it, or the
    worker would finish its long items (or be SIGKILLed) instead of handing them back."""
    long_items = write_lines(tmp_path / "long.jsonl", ["60"] * 4)
    env = clean_environ(TASKFAN_REDIS_URL=redis_url)
    proc = start_run(popen, "-i", str(long_items), env=env, wrap=SIGINT_IGNORED)
    stream = QueueKeys("default").stream

    def a_batch_running() -> bool:
        try:
            return int(r.xpending(stream, keys.GROUP)["pending"]) > 0
        except redis.ResponseError:  # no consumer group yet
            return False

    wait_until(a_batch_running, timeout=30, message="a batch running")
    started = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 130
    err = proc.stderr.read() if proc.stderr else ""
    assert "SIGTERM again: cold stop, handing unfinished batches back" in err, err
    wait_until(lambda: not running(started), timeout=15, message=lambda: f"{running(started)}")
    held: Any = r.xpending_range(stream, keys.GROUP, "-", "+", 10)
    assert held and all(entry["time_since_delivered"] >= 60_000 for entry in held), held


def test_a_worker_that_dies_ends_the_run_with_an_error(
    slow_input: Path, popen: list[subprocess.Popen[str]]
) -> None:
    proc = start_run(popen, "-i", str(slow_input), env=clean_environ())
    socket = read_until(proc, EMBEDDED).group(1)
    worker_pid = int(read_until(proc, re.compile(r"taskfan worker run-(\d+) on")).group(1))
    with embedded(socket) as client:
        wait_until(lambda: some_batches_done(client), timeout=30, message="a batch done")
    (worker,) = run_workers_alive(worker_pid)
    started = descendants(proc.pid)
    subprocess.run(["kill", "-KILL", str(worker)], check=True)
    assert proc.wait(30) == 2
    rest = proc.stderr.read() if proc.stderr else ""
    assert "the local worker exited with code -9 before the job finished" in rest
    wait_until(
        lambda: not running(started), timeout=15, message=lambda: f"{running(started)} to end"
    )
