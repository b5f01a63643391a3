"""Issue 9: a standard RQ queue of the seed task's jobs, drained by 2 RQ
``SimpleWorker`` processes and by one taskfan node (2 pool processes) started
with ``--rq-queue``.

Both consumers run all along, each on a queue of its own, and take turns. A run
makes the jobs with RQ's ``Queue.enqueue_many`` (jobs of the queue, their ids
pushed onto a staging list that nobody reads), then moves the whole list into
place with one RENAME, and is timed from that moment to the last job in the
queue's finished registry: the time to drain a queue of 10,000 jobs, without
the producer's time to enqueue them, which would count the same for both. The
values are then read back from each job's RQ result and checked (not timed),
and the run's keys deleted.
"""

from __future__ import annotations

import base64
import pickle
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from rq import Queue
from rq.job import Job
from rq.results import Result

from benchmarks.config import SLOW_REPEATS, SLOW_SECONDS
from benchmarks.measure import Run
from benchmarks.processes import READY_TIMEOUT, WARM_UP, PythonProcess
from benchmarks.rq_side import RQWorkers
from benchmarks.runners import TIMEOUT, Items, make_items
from benchmarks.tasks import task

Say = Callable[[str], None]
RQ_QUEUE, NODE_QUEUE = "taskfan-bench-rq-drain-rq", "taskfan-bench-rq-drain-node"


class RqNodeProcess(PythonProcess):
    """``taskfan worker --rq-queue QUEUE --processes N``."""

    def __init__(self, redis_url: str, queue: Queue, processes: int = 2) -> None:
        args = [
            "-m", "taskfan", "worker", "--redis-url", redis_url, "--rq-queue", queue.name,
            "--processes", str(processes), "--log-level", "WARNING",
        ]  # fmt: skip
        super().__init__(args, f"taskfan worker on RQ queue {queue.name}")
        self.queue = queue

    def wait_ready(self) -> None:
        """Block until the node ran RQ warm-up jobs (pool processes started)."""
        jobs = self.queue.enqueue_many([Queue.prepare_data(task, args=(i,)) for i in WARM_UP])
        deadline = time.monotonic() + READY_TIMEOUT
        for job in jobs:
            while job.latest_result(timeout=1) is None:
                self.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.what}: no warm-up result in {READY_TIMEOUT}s")


class _Staged(Queue):
    """The queue, but its job ids go onto a staging list (``key``) instead."""

    @property
    def key(self) -> str:
        return f"{self._key}:taskfan-bench-staged"


def time_drain(queue: Queue, items: Items, expected: list[Any]) -> float:
    """Seconds from one RQ job per item appearing in the queue to the last one finished."""
    connection = queue.connection
    _forget(queue)
    staged = _Staged(queue.name, connection=connection)
    pipe = connection.pipeline()
    jobs = staged.enqueue_many([Queue.prepare_data(task, args=(item,)) for item in items], pipe)
    pipe.srem(Queue.redis_queues_keys, staged.key)  # enqueue_many registered the staging list
    pipe.execute()
    finished, failed = queue.finished_job_registry.key, queue.failed_job_registry.key
    started = time.perf_counter()
    connection.rename(staged.key, queue.key)
    polls = 0
    # One ZCARD per poll, the failed registry every 50th: the clock's own work (it
    # was ~160 us of CPU per poll through RQ's registry objects, ~8% of a core at
    # one poll per 2 ms) must not take the CPU a CPU-bound runner needs.
    while connection.zcard(finished) < len(jobs):
        polls += 1
        if polls % 50 == 0 and connection.zcard(failed):
            raise RuntimeError(f"RQ queue {queue.name}: a job failed")
        if time.perf_counter() - started > TIMEOUT:
            raise RuntimeError(f"RQ queue {queue.name}: not drained in {TIMEOUT}s")
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    if _values(connection, [job.id for job in jobs]) != expected:
        raise RuntimeError(f"RQ queue {queue.name}: the results differ from the local pool's")
    _forget(queue, [job.id for job in jobs])
    return elapsed


def _values(connection: redis.Redis, ids: list[str]) -> list[Any]:
    """Each job's latest result, read as RQ stores it (pickle, base64)."""
    pipe = connection.pipeline(transaction=False)
    for job_id in ids:
        pipe.xrevrange(Result.get_key(job_id), "+", "-", count=1)
    values = []
    for reply in pipe.execute():
        fields = reply[0][1]
        values.append(pickle.loads(base64.b64decode(fields[b"return_value"])))
    return values


def _forget(queue: Queue, ids: Sequence[str] = ()) -> None:
    """Delete a run's jobs, results and registry entries (not timed)."""
    pipe = queue.connection.pipeline(transaction=False)
    for job_id in ids:
        pipe.delete(Job.key_for(job_id), Result.get_key(job_id))
    pipe.delete(queue.finished_job_registry.key, queue.failed_job_registry.key)
    pipe.execute()


def measure_rq_drain(
    redis_url: str, jobs: int, num_calc: int, repeats: int, say: Say
) -> dict[str, Any]:
    items = make_items(jobs, num_calc, seed=9)
    expected = [task(item) for item in items]
    rq_run, node_run = Run("rq", jobs), Run("taskfan-rq", jobs)
    with redis.Redis.from_url(redis_url) as connection:
        rq_queue, node_queue = Queue(RQ_QUEUE, connection), Queue(NODE_QUEUE, connection)
        workers = RQWorkers(redis_url, rq_queue, count=2)
        node = RqNodeProcess(redis_url, node_queue, processes=2)
        try:
            workers.wait_ready()
            node.wait_ready()
            for repeat in range(repeats):
                runs = [(rq_run, rq_queue), (node_run, node_queue)]
                for run, queue in runs if repeat % 2 == 0 else runs[::-1]:
                    if repeat >= SLOW_REPEATS and min(run.seconds) > SLOW_SECONDS:
                        continue
                    seconds = time_drain(queue, items, expected)
                    run.seconds.append(seconds)
                    say(f"(rq drain) {run.label}: {seconds:.3f}s")
        finally:
            workers.stop()
            node.stop()
    return {
        "jobs": jobs,
        "num_calc": num_calc,
        "rq": rq_run.to_json(),
        "taskfan": node_run.to_json(),
        "ratio_rq_over_taskfan": rq_run.median / node_run.median,
    }
