"""A hard cancel (``Job.cancel(terminate=True)``, ``taskfan cancel --terminate``)
stops the items already running on a node: their processes are killed, their
batch is let go unrecorded, the pool is rebuilt, and another job's item that
shared the pool runs again (not failed, not a crash, not a suspect)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from producer import Client
from taskfan.errors import JobCancelled
from tests import tasks
from tests.cli_support import invoke
from tests.conftest import StartWorker
from tests.helpers import FAST_BEAT, entries_of, wait_until
from tests.test_retries_node import node_record


def _calls(path: Path) -> int:
    return int(path.read_text()) if path.exists() else 0


@pytest.mark.parametrize("how", ["api", "cli"])
def test_a_hard_cancel_kills_the_running_item_and_reruns_the_other_jobs_item(
    how: str, redis_url: str, r: redis.Redis, start_worker: StartWorker, tmp_path: Path
) -> None:
    client = Client.from_url(redis_url)
    worker = start_worker(processes=2, env=FAST_BEAT)
    never = str(tmp_path / "never")  # the victim is never released: only a kill ends it
    victim_calls, other_calls = tmp_path / "victim", tmp_path / "other"
    victim = client.map(tasks.count_until, [(str(victim_calls), never, 120.0)], star=True)
    release = tmp_path / "release"
    other = client.map(tasks.count_until, [(str(other_calls), str(release))], star=True)
    # Both run at once, one in each pool process.
    wait_until(lambda: victim_calls.exists() and other_calls.exists(), 30, message=worker.log)

    started = time.monotonic()
    if how == "api":
        assert victim.cancel(terminate=True)
    else:
        result = invoke("cancel", "--terminate", victim.id, "--redis-url", redis_url)
        assert result.exit_code == 0 and "cancelled" in result.stderr, result.output
    # The node kills the victim's process at its next heartbeat and lets its batch go.
    wait_until(lambda: not entries_of(r, victim.id), timeout=20, message=worker.log)
    assert time.monotonic() - started < 20  # promptly: far before the task's 120 s
    with pytest.raises(JobCancelled):
        victim.wait(timeout=10)

    # The other job's item was in the killed pool: it runs again, once, and succeeds.
    wait_until(lambda: _calls(other_calls) == 2, timeout=30, message=worker.log)
    release.write_text("go")
    assert next(iter(other.outcomes(timeout=60))).value == 2
    assert other.progress().failed == 0
    # The victim's item is not run again, and the node keeps serving.
    assert list(client.map(tasks.square, [3]).results(timeout=60)) == [9]
    assert _calls(victim_calls) == 1
    log = worker.log()
    assert f"job {victim.id}: cancelled with terminate: killing the pool" in log, log
    assert (
        f"job {victim.id} batch 0: the job was cancelled with terminate; 0 items not run, "
        "1 stopped in the pool" in log
    ), log
    assert "a pool process died" not in log and "WorkerProcessDied" not in log, log
    assert worker.proc.poll() is None


def test_a_soft_cancel_lets_the_running_item_finish(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, tmp_path: Path
) -> None:
    """Without terminate the running item is left alone (its result is not recorded)."""
    client = Client.from_url(redis_url)
    worker = start_worker(processes=1, env=FAST_BEAT)
    calls, release = tmp_path / "calls", tmp_path / "release"
    victim = client.map(tasks.count_until, [(str(calls), str(release))], star=True)
    wait_until(calls.exists, 30, message=worker.log)
    assert victim.cancel()
    # Three heartbeats later (each checks the held jobs), a hard cancel would have killed.
    beats: set[str] = set()

    def three_beats() -> bool:
        beats.add(node_record(r)["heartbeat_at"])
        return len(beats) > 3

    wait_until(three_beats, 30)
    assert entries_of(r, victim.id), "the running batch was let go before it finished"
    release.write_text("go")
    wait_until(lambda: not entries_of(r, victim.id), timeout=30, message=worker.log)
    assert "killing the pool" not in worker.log()
    assert _calls(calls) == 1


def test_a_hard_cancel_stops_a_batch_running_queued_and_waiting_at_once(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, tmp_path: Path
) -> None:
    """One process: item 0 runs, item 1 waits in the pool behind it, item 2 waits
    in the node. The batch is let go once, each item counted once, none rerun."""
    client = Client.from_url(redis_url)
    worker = start_worker(processes=1, env=FAST_BEAT)
    never = str(tmp_path / "never")
    counters = [tmp_path / f"item{i}" for i in range(3)]
    victim = client.map(
        tasks.count_until, [(str(c), never, 120.0) for c in counters], star=True,
        batch_size=3, chunksize=1,
    )  # fmt: skip
    wait_until(counters[0].exists, 30, message=worker.log)
    assert victim.cancel(terminate=True)
    wait_until(lambda: not entries_of(r, victim.id), timeout=20, message=worker.log)
    assert list(client.map(tasks.square, [4]).results(timeout=60)) == [16]
    assert [_calls(c) for c in counters] == [1, 0, 0]
    log = worker.log()
    line = (
        f"job {victim.id} batch 0: the job was cancelled with terminate; 1 items not run, "
        "2 stopped in the pool, 0 waiting to retry dropped"
    )
    assert log.count(line) == 1, log
    assert "(0 chunks of other jobs in it run again)" in log, log


def test_a_soft_cancel_can_be_made_hard(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, tmp_path: Path
) -> None:
    client = Client.from_url(redis_url)
    worker = start_worker(processes=1, env=FAST_BEAT)
    calls = tmp_path / "calls"
    victim = client.map(
        tasks.count_until, [(str(calls), str(tmp_path / "never"), 120.0)], star=True
    )
    wait_until(calls.exists, 30, message=worker.log)
    assert victim.cancel()
    assert not victim.cancel(terminate=True)  # already cancelled: made hard, says False
    wait_until(lambda: not entries_of(r, victim.id), timeout=20, message=worker.log)
    assert f"job {victim.id}: cancelled with terminate: killing the pool" in worker.log()
    assert list(client.map(tasks.square, [5]).results(timeout=60)) == [25]
