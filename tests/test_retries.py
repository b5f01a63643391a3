"""Retries held by the node, alone: the child's answer and the scheduler's heap
(a clock passed in: nothing sleeps)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from taskfan.codec import PICKLE
from taskfan.keys import QueueKeys
from taskfan.options import CallMode, TaskOptions
from taskfan.outcomes import Outcome, ResultEntry, iter_outcomes
from taskfan.protocol import BatchEntry
from worker.core.batches import Chunk, Completed, Delivery
from worker.core.chunk_sizing import ChunkSizer
from worker.core.scheduler import HELD_PER_PROCESS, Scheduler
from worker.pool.child import ChunkResult, Retry, run_chunk

QUEUE = QueueKeys("default")
#: retries after a backoff of 5 to 10 s (full jitter under a 10 s ceiling)
TEN_SECONDS = TaskOptions(retries=3, backoff=10.0, backoff_max=10.0)


def flaky(folder: Path, fails: list[int]) -> list[tuple[str, int]]:
    """Items for tasks.fail_times: item i raises ConnectionError its first fails[i] calls."""
    folder.mkdir(parents=True, exist_ok=True)
    return [(str(folder / f"c{i}"), n) for i, n in enumerate(fails)]


def delivery(index: int, items: list[Any], options: TaskOptions, chunksize: int = 0,
             fn_ref: str = "tests.tasks:fail_times") -> Delivery:  # fmt: skip
    entry = BatchEntry("job1", index, index * 100, len(items), fn_ref, "pickle", CallMode.ARGS,
                       chunksize, pickle.dumps(items), options)  # fmt: skip
    fields = {k.encode(): v if isinstance(v, bytes) else str(v).encode()
              for k, v in entry.fields().items()}  # fmt: skip
    return Delivery(QUEUE, f"1-{index}".encode(), fields)


def run(chunk: Chunk) -> ChunkResult:
    """What the node's pool would return for the chunk."""
    entry = chunk.batch.entry
    return run_chunk(entry.fn_ref, entry.codec, entry.mode.value, chunk.items(), entry.options,
                     first=chunk.lo, retrying=chunk.retrying)  # fmt: skip


def drain(s: Scheduler, now: float) -> list[Chunk]:
    s.retries_due(now)
    chunks = []
    while (chunk := s.next_chunk()) is not None:
        s.sent(chunk, now)
        chunks.append(chunk)
    return chunks


def outcomes(completed: Completed) -> list[Outcome]:
    return list(iter_outcomes(ResultEntry.parse(completed.entry, "t"), PICKLE, "t"))


def test_the_child_returns_a_retry_and_settles_the_rest_of_its_chunk(tmp_path: Path) -> None:
    items = flaky(tmp_path, [0, 1, 0, 1, 0])
    result = run_chunk("tests.tasks:fail_times", "pickle", "a", items, TEN_SECONDS, first=40)
    # Items 41 and 43 wait (one delay for both: they come due together); the rest settle.
    delay = result.retries[0].delay
    assert 5.0 <= delay <= 10.0
    assert result.retries == (Retry(41, 2, delay), Retry(43, 2, delay))
    assert [(p.offset, p.size, p.failed) for p in result.parts] == [(40, 1, 0), (42, 1, 0),
                                                                    (44, 1, 0)]  # fmt: skip
    # A chunk of retries: its last attempt settles, whatever happens.
    again = run_chunk("tests.tasks:fail_times", "pickle", "a", [items[1], items[3]], TEN_SECONDS,
                      retrying=[(41, 2), (43, 4)])  # fmt: skip
    assert again.retries == ()
    assert [(p.offset, p.size) for p in again.parts] == [(41, 1), (43, 1)]
    assert again.failed == 0


def test_a_last_attempt_or_a_type_not_listed_fails_at_once(tmp_path: Path) -> None:
    (item,) = flaky(tmp_path, [9])
    last = run_chunk("tests.tasks:fail_times", "pickle", "a", [item], TEN_SECONDS,
                     retrying=[(7, 4)])  # fmt: skip
    assert last.retries == () and last.failed == 1
    listed = TaskOptions(retries=3, retry_on=("ValueError",))
    other = run_chunk("tests.tasks:fail_times", "pickle", "a", [item], listed)
    assert other.retries == () and other.failed == 1


def test_an_item_waits_in_the_node_and_its_batch_completes_after_its_retries(
    tmp_path: Path,
) -> None:
    s = Scheduler(1, ChunkSizer(1))
    assert s.accept(delivery(0, flaky(tmp_path, [0, 2, 0]), TEN_SECONDS, chunksize=3)) is None
    (chunk,) = drain(s, now=0.0)
    assert s.done(chunk, run(chunk), now=0.0) is None
    # The item waits in the node, not in the pool: nothing runs, more batches are wanted.
    due = s.next_retry()
    assert (s.retries.pending, len(s.in_pool)) == (1, 0) and due is not None and due <= 10.0
    assert s.batches_wanted() > 0
    assert drain(s, now=due - 0.001) == []
    (retry,) = drain(s, now=due)
    assert retry.retrying == ((1, 2),) and retry.items() == [chunk.batch.items[1]]
    assert s.done(retry, run(retry), now=10.0) is None  # the second call fails too
    due = s.next_retry()
    assert due is not None and 15.0 <= due <= 20.0
    (last,) = drain(s, now=20.0)
    completed = s.done(last, run(last), now=20.0)
    assert completed is not None and (completed.ok, completed.failed) == (3, 0)
    assert [(o.value, o.attempts) for o in outcomes(completed)] == [(1, 1), (3, 3), (1, 1)]
    assert s.retries.pending == 0 and not s.retries.jobs


def test_items_due_together_go_back_as_one_chunk_ahead_of_new_work(tmp_path: Path) -> None:
    s = Scheduler(1, ChunkSizer(1))
    s.accept(delivery(0, flaky(tmp_path, [1, 0, 1, 1]), TEN_SECONDS, chunksize=4))
    (chunk,) = drain(s, now=0.0)
    s.done(chunk, run(chunk), now=0.0)
    s.accept(delivery(1, flaky(tmp_path / "b", [0] * 4), TEN_SECONDS, chunksize=4))
    s.retries_due(10.0)
    first = s.next_chunk()
    assert first is not None and first.retrying == ((0, 2), (2, 2), (3, 2))
    assert first.where() == "job job1 batch 0 items 0 (attempt 2), 2 (attempt 2), 3 (attempt 2)"
    s.sent(first, 10.0)
    completed = s.done(first, run(first), now=10.0)
    assert completed is not None
    assert [o.attempts for o in outcomes(completed)] == [2, 1, 2, 2]


def test_each_attempt_gets_its_own_hard_timeout_and_a_timeout_keeps_its_attempt(
    tmp_path: Path,
) -> None:
    s = Scheduler(2, ChunkSizer(2))
    options = TaskOptions(hard_timeout=5.0, retries=2, backoff=10.0, backoff_max=10.0)
    s.accept(delivery(0, flaky(tmp_path, [1, 0]), options))
    first, second = drain(s, now=0.0)
    s.done(first, run(first), now=1.0)
    s.done(second, run(second), now=1.0)
    (retry,) = drain(s, now=11.0)
    assert retry.deadline == 16.0  # its clock starts when the retry starts
    assert s.expired(15.9) == [] and s.expired(16.0) == [retry]
    completed = s.error(retry, "HardTimeout", "killed")
    assert completed is not None
    assert [(o.ok, o.attempts) for o in outcomes(completed)] == [(False, 2), (True, 1)]


def test_a_retry_that_kills_its_process_is_isolated_with_its_attempt(tmp_path: Path) -> None:
    s = Scheduler(1, ChunkSizer(1))
    s.accept(delivery(0, flaky(tmp_path, [1, 0, 1]), TEN_SECONDS, chunksize=3))
    (chunk,) = drain(s, now=0.0)
    s.done(chunk, run(chunk), now=0.0)
    (retry,) = drain(s, now=10.0)  # items 0 and 2 on their second attempt
    assert s.crashed(retry, "signal 11 (SIGSEGV)") is None
    (alone,) = drain(s, now=10.0)
    assert alone.suspect and alone.retrying == ((0, 2), (2, 2))
    assert s.crashed(alone, "signal 11 (SIGSEGV)") is None  # again: halve it
    (good,) = drain(s, now=10.0)
    assert good.retrying == ((0, 2),)
    assert s.done(good, run(good), now=10.0) is None
    (poison,) = drain(s, now=10.0)
    completed = s.crashed(poison, "signal 11 (SIGSEGV)")
    assert completed is not None
    got = outcomes(completed)
    assert [(o.ok, o.attempts) for o in got] == [(True, 2), (True, 1), (False, 2)]
    assert got[2].error is not None and got[2].error.type == "WorkerProcessDied"


def test_a_stopping_node_gives_up_batches_whose_retries_fall_after_its_grace(
    tmp_path: Path,
) -> None:
    s = Scheduler(1, ChunkSizer(1))
    s.accept(delivery(0, flaky(tmp_path, [1]), TEN_SECONDS))
    (chunk,) = drain(s, now=0.0)
    s.done(chunk, run(chunk), now=0.0)
    assert s.take_unstarted() == []  # it ran: it is not "unstarted"
    assert s.take_waiting(after=30.0) == []  # its retry is due within the grace period
    (batch,) = s.take_waiting(after=5.0)
    assert batch is chunk.batch and not s.batches
    assert (s.retries.pending, s.next_retry()) == (0, None)


def test_a_job_that_ended_drops_the_batches_that_only_wait_for_retries(tmp_path: Path) -> None:
    s = Scheduler(1, ChunkSizer(1))
    s.accept(delivery(0, flaky(tmp_path / "a", [1]), TEN_SECONDS))
    (waiting,) = drain(s, now=0.0)
    s.done(waiting, run(waiting), now=0.0)
    s.accept(delivery(1, flaky(tmp_path / "b", [1, 0]), TEN_SECONDS, chunksize=1))
    running, out = drain(s, now=0.0)
    s.done(running, run(running), now=0.0)  # batch 1 waits for a retry, and has a chunk out
    assert s.retries.jobs == {"job1": 2}
    (completed,) = s.ended({"job1": "the job was cancelled"})
    assert completed.delivery.entry_id == b"1-0"
    assert completed.job_id == "" and completed.dead_reason is None  # acknowledged, unrecorded
    assert s.retries.jobs == {}  # batch 1's retry is dropped too; its chunk out is not run again
    late = s.done(out, run(out), now=0.0)  # batch 1's turn comes once its chunk is back
    assert late is not None and late.delivery.entry_id == b"1-1" and late.job_id == ""


def test_a_released_batch_s_retries_are_void_and_held_batches_are_bounded(
    tmp_path: Path,
) -> None:
    s = Scheduler(1, ChunkSizer(1))
    for index in range(HELD_PER_PROCESS):
        s.accept(delivery(index, flaky(tmp_path / str(index), [1]), TEN_SECONDS))
        (chunk,) = drain(s, now=0.0)
        s.done(chunk, run(chunk), now=0.0)
    assert s.retries.pending == HELD_PER_PROCESS
    assert s.batches_wanted() == 0  # every batch waits for a retry: read no more
    s.release(chunk.batch.delivery)
    assert s.retries.pending == HELD_PER_PROCESS - 1 and s.batches_wanted() > 0
    s.retries_due(10.0)
    assert [c.batch.delivery for c in s.pending].count(chunk.batch.delivery) == 0
    assert len(s.pending) == HELD_PER_PROCESS - 1


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_backoff_doubles_within_its_jitter(attempt: int) -> None:
    from worker.pool.child import backoff_delay

    options = TaskOptions(retries=5, backoff=1.0, backoff_max=3.0)
    ceiling = min(3.0, 2 ** (attempt - 1))
    assert ceiling / 2 <= backoff_delay(attempt, options) <= ceiling


def test_a_stopping_nodes_check_for_batches_waiting_on_retries_skips_the_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stopping node asks on every turn of its loop which batches it has not
    started and which only wait for retries (``take_unstarted``,
    ``take_waiting``). With a batch of one-item chunks that took a
    pass over every waiting chunk, so each chunk cost a pass over all the others
    through the grace period (the cause of 8ab3192's defect, in another place)."""
    s = Scheduler(1, ChunkSizer(1))
    s.accept(delivery(0, flaky(tmp_path / "a", [1]), TEN_SECONDS))  # waits for a retry
    (waiting,) = drain(s, now=0.0)
    s.done(waiting, run(waiting), now=0.0)
    s.accept(delivery(1, list(range(2_000)), TaskOptions(), chunksize=1))
    started = s.next_chunk()
    assert started is not None
    s.sent(started, 0.0)  # one of its chunks runs: it is not "unstarted"
    assert len(s.pending) == 1_999
    from worker.core.pending import PendingChunks

    walked = 0
    walk, replace = PendingChunks.__iter__, PendingChunks.replace

    def counted(self: PendingChunks) -> Any:
        nonlocal walked
        walked += 1
        return walk(self)

    def counted_replace(self: PendingChunks, chunks: Any) -> None:
        nonlocal walked
        walked += 1
        replace(self, chunks)

    monkeypatch.setattr(PendingChunks, "__iter__", counted)
    monkeypatch.setattr(PendingChunks, "replace", counted_replace)
    assert s.take_unstarted() == []
    assert s.take_waiting(after=30.0) == []  # its retry is due within the grace period
    (batch,) = s.take_waiting(after=5.0)
    assert batch is waiting.batch
    assert walked == 0
