"""RQ, the Redis queue people use today: its workers and one timed run.

Imported only when RQ is measured (``rq`` is in the ``bench`` extra), so the
rest of the suite runs without it. RQ workers are ``SimpleWorker``s: each job
runs in the worker process itself (the default ``Worker`` forks per job, which
would be slower still).
"""

from __future__ import annotations

import signal
import time
from typing import Any

from rq import Queue, Worker

from benchmarks.processes import READY_TIMEOUT, WARM_UP, PythonProcess
from benchmarks.runners import TIMEOUT, Items
from benchmarks.tasks import task


class RQWorkers:
    """``count`` RQ ``SimpleWorker`` processes (work in the worker itself, no fork per job)."""

    def __init__(self, redis_url: str, queue: Queue, count: int = 2) -> None:
        args = [
            "-m", "rq.cli", "worker", "--worker-class", "rq.worker.SimpleWorker",
            "--url", redis_url, "--path", ".", "--quiet", queue.name,
        ]  # fmt: skip
        self.queue = queue
        self.workers = [PythonProcess(args, f"rq worker {i}") for i in range(count)]

    def wait_ready(self) -> None:
        """Block until every worker registered and the warm-up jobs ran."""
        connection = self.queue.connection
        deadline = time.monotonic() + READY_TIMEOUT
        while Worker.count(connection=connection, queue=self.queue) < len(self.workers):
            for worker in self.workers:
                worker.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"RQ workers did not register in {READY_TIMEOUT}s")
            time.sleep(0.02)
        jobs = self.queue.enqueue_many([Queue.prepare_data(task, args=(item,)) for item in WARM_UP])
        for job in jobs:
            if job.latest_result(timeout=int(READY_TIMEOUT)) is None:
                raise RuntimeError("RQ workers did not run the warm-up jobs")

    def stop(self) -> None:
        """Stop every worker at once. RQ's warm shutdown (SIGTERM) can take 30 s for
        its pub/sub thread to end; a second SIGTERM is its cold shutdown, which exits
        now. Nothing runs by then: every job of the run has its result."""
        for worker in self.workers:
            worker.signal(signal.SIGTERM)
        deadline = time.monotonic() + 1.0
        for worker in self.workers:
            worker.wait_exit(max(0.0, deadline - time.monotonic()))
            worker.signal(signal.SIGTERM)
        for worker in self.workers:
            worker.stop()


def time_rq(queue: Queue, items: Items) -> tuple[float, list[Any]]:
    """One RQ job per item, enqueued in one pipeline (``enqueue_many``), results read
    in input order as each job's result stream receives it. RQ expires its
    finished jobs itself (``result_ttl``, 500 s by default)."""
    started = time.perf_counter()
    jobs = queue.enqueue_many([Queue.prepare_data(task, args=(item,)) for item in items])
    results = []
    for job in jobs:
        result = job.latest_result(timeout=int(TIMEOUT))
        if result is None or result.type != result.Type.SUCCESSFUL:
            raise RuntimeError(f"RQ job {job.id} did not succeed: {result and result.exc_string}")
        results.append(result.return_value)
    return time.perf_counter() - started, results
