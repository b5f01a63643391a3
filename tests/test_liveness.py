"""A node's cached liveness of the jobs it holds batches of (``worker.core.liveness``),
alone: a job found ended runs nothing more of what the node fetched. The real
node's case is in tests/test_cancel_fetched.py."""

from __future__ import annotations

from taskfan.options import TaskOptions
from tests.test_retries import delivery, drain, run
from worker.core.batches import Batch
from worker.core.chunk_sizing import ChunkSizer
from worker.core.scheduler import Scheduler

CANCELLED = {"job1": "the job was cancelled"}


def test_a_fetched_batch_of_an_ended_job_hands_no_more_chunks_to_the_pool() -> None:
    s = Scheduler(1, ChunkSizer(1))
    s.accept(delivery(0, [(1, 2)] * 6, TaskOptions(), chunksize=1, fn_ref="tests.tasks:add"))
    first, second = drain(s, now=0.0)  # two chunks in the pool (one per process + one queued)
    assert len(s.pending) == 4 and s.liveness.jobs == {"job1": 1}
    assert s.ended(CANCELLED) == []  # chunks are in the pool: the batch waits for them
    assert not s.pending and s.next_chunk() is None
    assert s.done(first, run(first)) is None  # the other is still in the pool
    completed = s.done(second, run(second))
    assert completed is not None and completed.job_id == ""  # acknowledged, unrecorded
    assert completed.delivery.entry_id == b"1-0" and completed.dead_reason is None
    assert completed.skipped  # counted as batches_skipped by the node
    assert s.ended(CANCELLED) == []  # the next heartbeat says it again: let go once
    s.release(completed.delivery)
    assert (s.liveness.jobs, s.liveness.ended, s.batches) == ({}, {}, {})


def test_a_fetched_batch_with_nothing_in_the_pool_is_let_go_at_once() -> None:
    s = Scheduler(1, ChunkSizer(1))
    s.accept(delivery(0, [(1, 2)] * 2, TaskOptions(), chunksize=1, fn_ref="tests.tasks:add"))
    s.accept(delivery(1, [(1, 2)] * 2, TaskOptions(), chunksize=1, fn_ref="tests.tasks:add"))
    running = drain(s, now=0.0)  # batch 0's two chunks fill the pool
    assert {c.batch.entry.index for c in running} == {0}
    completed = s.ended({"job1": "the job no longer exists", "other": "the job was cancelled"})
    assert [c.delivery.entry_id for c in completed] == [b"1-1"]
    assert s.liveness.ended == {"job1": "the job no longer exists"}  # only jobs it holds


def test_a_chunk_of_an_ended_job_is_not_rerun_after_the_pool_breaks() -> None:
    s = Scheduler(1, ChunkSizer(1))
    s.accept(delivery(0, [(1, 2)] * 2, TaskOptions(), chunksize=1, fn_ref="tests.tasks:add"))
    first, second = drain(s, now=0.0)
    assert s.ended(CANCELLED) == []
    assert s.crashed(first, "signal 9 (SIGKILL)") is None  # not a suspect: its job ended
    assert not s.suspects
    completed = s.requeue(second)  # a hard timeout killed the pool under it
    assert completed is not None and completed.job_id == "" and not s.pending


def test_jobs_of_other_sources_are_not_tracked() -> None:
    s = Scheduler(1, ChunkSizer(1))
    batch = s.intake.take(
        delivery(0, [(1, 2)], TaskOptions(), fn_ref="tests.tasks:add"), started=0.0
    )
    assert isinstance(batch, Batch)
    assert s.admit(batch) is None  # as the RQ source admits its batches
    assert s.liveness.jobs == {}
    assert s.ended(CANCELLED) == []
    assert len(s.pending) == 1
