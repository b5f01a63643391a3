"""``taskfan worker --max-tasks-per-child N``: no pool process runs more than N
chunks; the node replaces its pool instead of letting ProcessPoolExecutor do it
(which deadlocks with a backlog: CPython gh-115634)."""

from __future__ import annotations

from collections import Counter

from producer import Client
from tests import tasks
from tests.conftest import StartWorker


def test_no_process_runs_more_than_max_tasks_per_child_chunks(
    redis_url: str, start_worker: StartWorker
) -> None:
    worker = start_worker("--max-tasks-per-child", "2", processes=2)
    client = Client.from_url(redis_url)
    pids = list(client.map(tasks.pid, range(30), chunksize=1, batch_size=5).results(timeout=120))
    per_process = Counter(pids)
    assert max(per_process.values()) <= 2, per_process
    assert len(per_process) >= 15  # 30 chunks, at most 2 per process
    assert worker.proc.poll() is None


def test_chunks_count_not_items(redis_url: str, start_worker: StartWorker) -> None:
    """As ProcessPoolExecutor.map with a chunksize counts its chunks as tasks."""
    start_worker("--max-tasks-per-child", "1", processes=1)
    client = Client.from_url(redis_url)
    pids = list(client.map(tasks.pid, range(6), chunksize=3, batch_size=6).results(timeout=60))
    assert pids[0] == pids[2] and pids[3] == pids[5] and pids[0] != pids[3], pids
