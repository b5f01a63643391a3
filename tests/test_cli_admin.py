"""``taskfan cancel`` and ``taskfan purge``."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from producer import Client
from taskfan.cli import main
from taskfan.keys import QueueKeys
from tests import tasks
from tests.conftest import StartWorker


@pytest.mark.cluster
def test_cancel_a_job_then_again(redis_url: str, client: Client) -> None:
    job = client.map(tasks.square, range(10))
    runner = CliRunner()
    first = runner.invoke(main, ["cancel", job.id, "--redis-url", redis_url])
    assert first.exit_code == 0, first.output
    assert "cancelled" in first.output
    assert job.status == "cancelled"
    again = runner.invoke(main, ["cancel", job.id, "--redis-url", redis_url])
    assert again.exit_code == 0 and "already cancelled" in again.output
    missing = runner.invoke(main, ["cancel", "nosuchjob", "--redis-url", redis_url])
    assert missing.exit_code == 2 and "nosuchjob not found" in missing.output


@pytest.mark.cluster
def test_purge_asks_then_drops_the_queue(redis_url: str, client: Client, r: redis.Redis) -> None:
    job = client.map(tasks.square, range(10), batch_size=5)
    runner = CliRunner()
    refused = runner.invoke(main, ["purge", "default", "--redis-url", redis_url], input="n\n")
    assert refused.exit_code == 2 and r.xlen(QueueKeys("default").stream) == 2
    assert refused.output.endswith("[y/N]: Error: not confirmed: nothing changed\n")
    # No one to ask (a script, CI): one line saying what to do, not a hanging prompt
    unasked = runner.invoke(main, ["purge", "default", "--redis-url", redis_url], input="")
    assert unasked.exit_code == 2 and r.xlen(QueueKeys("default").stream) == 2
    assert "Error: no answer (standard input is closed): pass --yes" in unasked.output
    done = runner.invoke(main, ["purge", "default", "--yes", "--redis-url", redis_url])
    assert done.exit_code == 0, done.output
    assert "dropped 2 batches, cancelled 1 jobs" in done.output
    assert job.status == "cancelled"


@pytest.mark.cluster
def test_retry_a_finished_job(
    redis_url: str, client: Client, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker()
    job = client.map(
        tasks.fail_times, [(str(tmp_path / "a"), 1), (str(tmp_path / "b"), 0)], star=True
    )
    assert job.wait(timeout=60) and job.progress().failed == 1
    runner = CliRunner()
    done = runner.invoke(main, ["retry", job.id, "--redis-url", redis_url])
    assert done.exit_code == 2 and "--allow-pickle" in done.output  # a pickle job
    done = runner.invoke(main, ["retry", job.id, "--allow-pickle", "--redis-url", redis_url])
    assert done.exit_code == 0, done.output
    assert "1 failed items queued again" in done.output
    assert job.wait(timeout=60) and job.progress() == (2, 0, 2)
    busy = client.map(tasks.sleep, [5.0])
    refused = runner.invoke(main, ["retry", busy.id, "--redis-url", redis_url])
    assert refused.exit_code == 2 and "only a finished job" in refused.output
