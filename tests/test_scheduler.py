"""The node's bookkeeping, alone: no Redis, no processes, no threads."""

from __future__ import annotations

import dataclasses
import pickle

from taskfan.codec import PICKLE
from taskfan.keys import QueueKeys
from taskfan.options import CallMode, TaskOptions
from taskfan.outcomes import ResultEntry, iter_outcomes
from taskfan.protocol import BatchEntry
from worker.core.batches import Chunk, Completed, Delivery
from worker.core.chunk_sizing import ChunkSizer
from worker.core.scheduler import Scheduler
from worker.pool.child import ChunkResult, run_chunk

QUEUE = QueueKeys("default")


def delivery(index: int, items: list[object], *, chunksize: int = 0, deliveries: int = 1,
             options: TaskOptions | None = None) -> Delivery:  # fmt: skip
    entry = BatchEntry(
        job_id="job1",
        index=index,
        start=index * 100,
        count=len(items),
        fn_ref="tests.tasks:square",
        codec="pickle",
        mode=CallMode.ONE,
        chunksize=chunksize,
        payload=pickle.dumps(items),
        options=options or TaskOptions(),
    )
    fields = {
        k.encode(): v if isinstance(v, bytes) else str(v).encode()
        for k, v in entry.fields().items()
    }
    return Delivery(QUEUE, f"1-{index}".encode(), fields, deliveries=deliveries)


def scheduler(processes: int = 2, max_deliveries: int = 5) -> Scheduler:
    return Scheduler(processes, ChunkSizer(processes), max_deliveries)


def run(chunk: Chunk) -> ChunkResult:
    """What the node's pool would return for the chunk."""
    entry = chunk.batch.entry
    return run_chunk(entry.fn_ref, entry.codec, entry.mode.value, chunk.items(), entry.options,
                     first=chunk.lo, retrying=chunk.retrying)  # fmt: skip


def values(completed: Completed) -> list[object]:
    entry = ResultEntry.parse(completed.entry, "test")
    return [o.value if o.ok else o.error.type for o in iter_outcomes(entry, PICKLE, "test")]  # type: ignore[union-attr]


def drain(s: Scheduler, now: float = 0.0) -> list[Chunk]:
    chunks = []
    while (chunk := s.next_chunk()) is not None:
        s.sent(chunk, now)
        chunks.append(chunk)
    return chunks


def test_a_batch_is_cut_into_chunks_and_joined_in_order() -> None:
    s = scheduler()
    assert s.accept(delivery(0, list(range(10)), chunksize=3)) is None
    chunks = drain(s)
    assert [(c.lo, c.hi) for c in chunks] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    completed = None
    for chunk in reversed(chunks):  # results may arrive in any order
        completed = s.done(chunk, run(chunk))
    assert completed is not None
    assert (completed.job_id, completed.field, completed.ok, completed.failed) == (
        "job1",
        "0",
        10,
        0,
    )
    assert values(completed) == [x * x for x in range(10)]


def test_the_pool_holds_at_most_two_chunks_per_process() -> None:
    s = scheduler(processes=2)
    s.accept(delivery(0, list(range(100)), chunksize=1))
    assert len(drain(s)) == 4
    assert len(s.pending) == 96


def test_a_suspect_runs_alone_and_is_halved_to_the_poison_item() -> None:
    s = scheduler()
    s.accept(delivery(0, list(range(8)), chunksize=8))
    (chunk,) = drain(s)
    assert s.crashed(chunk, "signal 11 (SIGSEGV)") is None  # first break: a suspect
    (alone,) = drain(s)
    assert alone.suspect and (alone.lo, alone.hi) == (0, 8)
    assert s.crashed(alone, "signal 11 (SIGSEGV)") is None  # again: halve it
    completed = None
    poison = 5
    while completed is None:
        (c,) = drain(s)  # suspects go one at a time
        assert len(s.in_pool) == 1
        if c.lo <= poison < c.hi:
            completed = s.crashed(c, "signal 11 (SIGSEGV)")
        else:
            completed = s.done(c, run(c))
    assert completed.failed == 1
    result = values(completed)
    assert result[poison] == "WorkerProcessDied"
    assert [v for i, v in enumerate(result) if i != poison] == [
        x * x for x in range(8) if x != poison
    ]


def test_hard_timeout_chunks_hold_one_item_and_wait_for_a_free_process() -> None:
    s = scheduler(processes=2)
    s.accept(delivery(0, [1, 2, 3, 4], options=TaskOptions(hard_timeout=5)))
    chunks = drain(s, now=100.0)
    assert [c.size for c in chunks] == [1, 1]  # only as many as processes
    assert s.next_deadline() == 105.0
    assert s.expired(104.9) == [] and len(s.expired(105.0)) == 2


def test_a_batch_delivered_too_often_is_dead_lettered_with_failed_items() -> None:
    s = scheduler(max_deliveries=3)
    completed = s.accept(delivery(0, [1, 2], deliveries=4))
    assert completed is not None and completed.dead_reason is not None
    assert "max_deliveries=3" in completed.dead_reason
    assert (completed.ok, completed.failed) == (0, 2)
    assert values(completed) == ["DeliveryLimit", "DeliveryLimit"]
    assert not s.pending


def test_a_malformed_entry_is_dead_lettered_and_a_bad_payload_fails_its_items() -> None:
    s = scheduler()
    broken = Delivery(QUEUE, b"1-1", {b"j": b"x"})
    completed = s.accept(broken)
    assert (
        completed is not None
        and completed.job_id == ""
        and "missing field" in str(completed.dead_reason)
    )
    bad = delivery(0, [1, 2])
    assert bad.fields is not None
    bad.fields[b"p"] = b"not a pickle"
    completed = s.accept(bad)
    assert completed is not None and completed.failed == 2 and completed.dead_reason
    assert values(completed) == ["BadBatch", "BadBatch"]


def test_cancelled_or_vanished_jobs_are_acknowledged_without_running() -> None:
    s = scheduler()
    skipped = dataclasses.replace(delivery(1, [1, 2]), skip="the job was cancelled")
    completed = s.accept(skipped)
    assert completed is not None and completed.job_id == "" and completed.dead_reason is None
    assert not s.pending
    # A malformed entry is dead-lettered, whatever its job's state.
    broken = Delivery(QUEUE, b"1-1", {b"j": b"job1"}, skip="the job no longer exists")
    completed = s.accept(broken)
    assert completed is not None and completed.job_id == ""
    assert completed.dead_reason is not None and "missing field" in completed.dead_reason


def test_a_node_reads_as_many_batches_as_fill_its_pool() -> None:
    s = scheduler(processes=2)
    assert s.batches_wanted() == 4  # nothing known: a batch may be one chunk
    s.accept(delivery(0, list(range(4)), chunksize=4))  # one chunk per batch
    assert s.batches_wanted() == 3  # 4 slots, 1 chunk waiting
    drain(s)
    assert s.batches_wanted() == 3
    s.accept(delivery(1, list(range(40)), chunksize=10))  # four chunks per batch
    assert s.batches_wanted() == 0  # a chunk per process waits already
    drain(s)  # three go in (four slots, one taken), one waits
    assert (len(s.in_pool), len(s.pending)) == (4, 1)
    assert s.batches_wanted() == 1  # one slot's worth; one batch gives four chunks


def test_a_finished_chunk_s_inputs_are_freed_before_its_batch_is_done() -> None:
    s = scheduler()
    s.accept(delivery(0, list(range(10, 16)), chunksize=2))
    first, second, third = drain(s)[:3]
    assert s.done(second, run(second)) is None
    assert second.batch.items == [10, 11, None, None, 14, 15]
    # the others still have theirs: a crash would run them again
    assert s.done(first, run(first)) is None
    completed = s.done(third, run(third))
    assert completed is not None and values(completed) == [100, 121, 144, 169, 196, 225]
