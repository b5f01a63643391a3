"""The RQ source's writer thread against a real Redis: a Redis error while it
records a batch's outcomes is retried, and the outcomes are recorded once."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job

from tests import rq_tasks
from worker.core.batches import Delivery
from worker.sources.rq import adapter as rqa
from worker.sources.rq.rq_source import RqQueueRef
from worker.sources.rq.rq_writer import FinishBatch, RqBatch, RqBooks, RqWriter, StartJobs

QUEUE = "writer"


def test_a_redis_error_while_recording_outcomes_is_retried(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [Queue(QUEUE, connection=r).enqueue(rq_tasks.double, i).id for i in range(3)]
    keys = rqa.QueueKeys(QUEUE)
    jobs = [rqa.describe(QUEUE, i, fields) for i, fields in rqa.dequeue(r, keys, 3) if fields]
    worker = rqa.RqWorker(r, "writer-node", [QUEUE], None, 60)
    worker.register()
    delivery = Delivery(RqQueueRef(QUEUE), b"rq-1", None)
    books = RqBooks(held={QUEUE: {job.id for job in jobs}})
    books.batches[delivery.entry_id] = RqBatch(delivery, QUEUE, jobs)
    written: list[tuple[Delivery, int, int]] = []
    writer = RqWriter(r, worker, {QUEUE: keys}, books, lambda *done: written.append(done), lease=60)
    real_finish, calls = rqa.finish, []

    def flaky_finish(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise redis.ConnectionError("connection lost (a test)")
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(rqa, "finish", flaky_finish)
    values = [rqa.run_job(job.item(None)) for job in jobs]
    writer.put(StartJobs(QUEUE, jobs))
    writer.put(FinishBatch(delivery, {0: pickle.dumps([values, [], []])}))
    writer.close()
    thread = threading.Thread(target=writer.run)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert written == [(delivery, 3, 0)]
    assert len(calls) == 2
    assert [Job.fetch(i, connection=r).return_value() for i in ids] == [0, 2, 4]
    assert not books.batches and not books.running and not books.held[QUEUE]
