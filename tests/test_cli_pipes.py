"""A reader that stops early (``taskfan results J | head -1``): the command exits
quietly with 0, as standard tools do, not with a traceback or "some items failed"."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from producer import Client
from tests import tasks
from tests.cli_support import REPO, clean_environ, descendants, running, taskfan
from tests.conftest import StartWorker
from tests.helpers import wait_until

#: enough outcomes to fill a pipe's buffer many times over
ITEMS = 5000


@pytest.fixture
def finished_job(redis_url: str, start_worker: StartWorker) -> str:
    job = Client.from_url(redis_url, codec="json").map(tasks.square, range(ITEMS))
    start_worker(processes=1)
    assert job.wait(timeout=60)
    return job.id


def into_closed_pipe(*args: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    """Run ``taskfan ARGS`` with stdout a pipe whose reader has already gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            taskfan(*args), cwd=REPO, env=clean_environ(TASKFAN_REDIS_URL=redis_url),
            stdin=subprocess.DEVNULL, stdout=write_end, stderr=subprocess.PIPE, text=True,
            timeout=60,
        )  # fmt: skip
    finally:
        os.close(write_end)


def test_every_listing_exits_0_when_its_reader_is_gone(redis_url: str, finished_job: str) -> None:
    for args in (
        ("results", finished_job),
        ("results", finished_job, "--failed-only"),
        ("jobs",),
        ("jobs", "--json"),
        ("status",),
        ("status", "--json"),
        ("status", finished_job),
        ("inspect", finished_job),
        ("nodes",),
        ("dead", "default"),
        ("--help",),
        ("results", "--help"),
    ):
        done = into_closed_pipe(*args, redis_url=redis_url)
        assert (done.returncode, done.stderr) == (0, ""), args


def test_results_into_head(redis_url: str, finished_job: str) -> None:
    """The shell's own pipe: head reads one line and leaves mid-stream."""
    done = subprocess.run(
        ["bash", "-c", 'set -o pipefail; "$@" | head -1', "bash",
         *taskfan("results", finished_job)],
        cwd=REPO, env=clean_environ(TASKFAN_REDIS_URL=redis_url),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{"index": 0, "ok": true, "result": 0}\n'
    assert done.stderr == ""


def test_run_into_head_stops_what_it_started(tmp_path: Path) -> None:
    """``taskfan run ... | head -1``: exit 0, and its worker and embedded server end."""
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(f"{i}\n" for i in range(ITEMS)))
    proc = subprocess.Popen(
        taskfan("run", "tests.tasks:square", "-i", str(inputs), "-p", "1"), cwd=REPO,
        env=clean_environ(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == '{"index": 0, "ok": true, "result": 0}\n'
        started = descendants(proc.pid)
        proc.stdout.close()  # head is done
        assert proc.wait(timeout=60) == 0
        err = proc.stderr.read()
        assert "Traceback" not in err and "cold stop" not in err, err
        wait_until(lambda: not running(started), timeout=15, message=lambda: f"{running(started)}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
