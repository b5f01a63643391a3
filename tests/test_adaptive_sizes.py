"""Sizes that adapt inside a job (issue 18 item 1): a job of a function whose items
cost far more or less than the function's earlier jobs is re-cut from its own
measured cost, and producers are told a low estimate. Pure: no Redis, no pool,
no clock (chunk seconds are given)."""

from __future__ import annotations

import itertools
import math
import pickle

from producer.sizing import BATCHES_PER_NODE, Capacity, plan
from taskfan.options import CallMode, TaskOptions
from taskfan.protocol import BatchEntry
from tests.test_scheduler import QUEUE, drain, run
from worker.core.batches import Chunk, Delivery
from worker.core.chunk_sizing import (
    JOBS_REMEMBERED,
    LONGEST_SECONDS,
    TAIL_SECONDS,
    TARGET_SECONDS,
    ChunkSizer,
    guided,
    regrown,
)
from worker.core.scheduler import Scheduler
from worker.pool.child import ChunkResult

FN = "tests.tasks:square"
#: the seed's (a) and (b): 3.6 ms and 35 us per item
DEAR, CHEAP = 3.6e-3, 35e-6


def delivery(job_id: str, index: int, count: int, *, chunksize: int = 0,
             options: TaskOptions | None = None) -> Delivery:  # fmt: skip
    entry = BatchEntry(
        job_id=job_id, index=index, start=index * count, count=count, fn_ref=FN,
        codec="pickle", mode=CallMode.ONE, chunksize=chunksize,
        payload=pickle.dumps(list(range(count))), options=options or TaskOptions(),
    )  # fmt: skip
    fields = {
        k.encode(): v if isinstance(v, bytes) else str(v).encode()
        for k, v in entry.fields().items()
    }
    return Delivery(QUEUE, f"{job_id}-{index}".encode(), fields)


def took(chunk: Chunk, per_item: float) -> ChunkResult:
    """The chunk's real outcomes, timed as if each item took ``per_item``."""
    return run(chunk)._replace(seconds=chunk.size * per_item)


def dear_history(sizer: ChunkSizer) -> None:
    """An earlier job measured the function at DEAR seconds an item."""
    for _ in range(20):
        sizer.observe(FN, 10, 10 * DEAR, "earlier")


def spans(chunks: list[Chunk]) -> list[tuple[int, int]]:
    return [(c.lo, c.hi) for c in chunks]


def test_a_job_100x_cheaper_than_the_last_is_re_cut_after_its_first_chunk() -> None:
    sizer = ChunkSizer(2)
    dear_history(sizer)
    s = Scheduler(2, sizer)
    assert s.accept(delivery("cheap", 0, 10_000)) is None
    # cut with the function's (old) cost: chunks of 0.25 s down to 50 ms of it
    longest = int(LONGEST_SECONDS / DEAR)
    sent = drain(s)
    first = sent[0].size
    assert all(c.size <= longest for c in [*sent, *s.pending])
    s.done(sent[0], took(sent[0], CHEAP))
    # re-cut from the job's own cost: from a quarter of the batch (two chunks per
    # process; 0.25 s would be more) down to 50 ms of 35 us items
    grown = [c.size for c in s.pending]
    assert 2_000 < grown[0] <= 10_000 // 4 and grown == sorted(grown, reverse=True)
    assert min(grown[:-1]) == int(TARGET_SECONDS / CHEAP)
    # every item is still in exactly one chunk, in order
    covered = spans([*sent, *s.pending])
    assert covered[0] == (0, first) and covered[-1][1] == 10_000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))


def test_every_held_batch_of_the_job_is_re_cut_and_other_jobs_are_not() -> None:
    sizer = ChunkSizer(2)
    dear_history(sizer)
    s = Scheduler(2, sizer)
    s.accept(delivery("cheap", 0, 4_000))
    s.accept(delivery("other", 0, 4_000))
    s.accept(delivery("cheap", 1, 4_000))
    sent = drain(s)
    s.done(sent[0], took(sent[0], CHEAP))
    sizes: dict[tuple[str, int], set[int]] = {}
    for c in s.pending:
        sizes.setdefault((c.batch.entry.job_id, c.batch.entry.index), set()).add(c.size)
    assert max(sizes["cheap", 0]) == max(sizes["cheap", 1]) == 1_000  # a quarter of 4,000
    # the other job is not measured: still cut with the function's cost
    assert max(sizes["other", 0]) == int(LONGEST_SECONDS / DEAR)


def test_fixed_and_hard_timeout_chunks_are_never_re_cut() -> None:
    for asked, options in ((5, None), (0, TaskOptions(hard_timeout=10.0))):
        sizer = ChunkSizer(2)
        dear_history(sizer)
        s = Scheduler(2, sizer)
        s.accept(delivery("cheap", 0, 1_000, chunksize=asked, options=options))
        before = [c.size for c in s.pending]
        sent = drain(s)
        s.done(sent[0], took(sent[0], CHEAP))
        assert {c.size for c in s.pending} == set(before[len(sent) :])


def test_regrown_keeps_retries_suspects_and_other_batches_in_place() -> None:
    s = Scheduler(2, ChunkSizer(2))
    s.accept(delivery("j", 0, 20, chunksize=2))
    s.accept(delivery("k", 0, 6, chunksize=2))
    batch_j = s.pending[0].batch
    retry = Chunk.of_retries(batch_j, [(1, 2)])
    suspect = Chunk(batch_j, 0, 2, suspect=True)
    pending = [retry, suspect, *s.pending]
    batch_j.chunk_size = batch_j.chunk_large = 8
    out = list(regrown(pending, {id(batch_j): batch_j}, 2))
    assert out[:2] == [retry, suspect]
    js = [c for c in out[2:] if c.batch is batch_j]
    assert spans(js) == [(0, 8), (8, 16), (16, 20)]
    assert [c.batch.entry.job_id for c in out[2:]] == ["j"] * 3 + ["k"] * 3


def test_producers_are_told_the_lowest_recent_cost() -> None:
    sizer = ChunkSizer(2)
    sizer.observe(FN, 100, 100 * CHEAP, "b")
    for _ in range(30):  # a long dear job pulls the average up ...
        sizer.observe(FN, 10, 10 * DEAR, "a")
    assert sizer.cost(FN) is not None and sizer.cost(FN) > 50 * CHEAP  # type: ignore[operator]
    # ... but a producer sizing the next job by it would cut a cheap one into
    # hundreds of tiny batches: it is told the cheap job's cost
    assert sizer.to_publish(FN, now=0.0) == CHEAP
    assert math.isclose(sizer.job_cost("a") or 0, DEAR)
    assert math.isclose(sizer.job_cost("b") or 0, CHEAP)


def test_a_node_remembers_a_bounded_number_of_jobs() -> None:
    sizer = ChunkSizer(2)
    for n in range(JOBS_REMEMBERED + 10):
        sizer.observe(FN, 1, 1.0, f"job{n}")
    assert sizer.job_cost("job0") is None
    assert sizer.job_cost(f"job{JOBS_REMEMBERED + 9}") == 1.0
    assert len(sizer._jobs) == JOBS_REMEMBERED


def test_a_node_of_short_chunks_reads_one_batch_ahead_before_it_runs_dry() -> None:
    sizer = ChunkSizer(1)
    for _ in range(5):
        sizer.observe(FN, 2, 2 * 0.02, "earlier")  # items of 20 ms
    s = Scheduler(1, sizer)
    s.accept(delivery("nap", 0, 25))  # guided: chunks of 12 items (0.25 s) down to 2
    assert [c.size for c in s.pending] == [12, 7, 3, 2, 1]
    wanted = []
    while s.pending:
        wanted.append(s.batches_wanted())
        chunk = s.next_chunk()
        if chunk is None:  # the pool is full: one finishes
            done = next(iter(s.in_pool))
            s.done(done, took(done, 0.02))
            continue
        s.sent(chunk, 0.0)
    # nothing while more than READ_AHEAD_SECONDS of work waits, then one batch
    assert wanted[0] == 0 and wanted[-1] == 1
    waiting_at_first_want = len(wanted) - wanted.index(1)
    assert 0 < waiting_at_first_want <= 4
    s.accept(delivery("nap", 1, 25))
    assert s.batches_wanted() == 0  # one batch ahead at most


def test_a_first_job_gives_every_one_of_many_nodes_batches() -> None:
    """No published cost yet: 64 batches would leave half of 128 nodes idle."""
    assert plan(6_400, None, Capacity(nodes=1, processes=2)).size == 100  # 64 batches
    many = plan(6_400, None, Capacity(nodes=128, processes=1)).size
    assert -(-6_400 // many) >= (BATCHES_PER_NODE - 1) * 128  # about 4 per node, rounded


def test_batches_for_many_one_process_nodes_leave_none_idle() -> None:
    """Issue 19: 32 one-process nodes, 3,200 items of 20 ms: every node gets
    several batches (and each batch at least two chunks)."""
    size = plan(3_200, 0.02, Capacity(nodes=32, processes=1)).size
    assert -(-3_200 // size) >= BATCHES_PER_NODE * 32


def test_guided_chunks_shrink_toward_the_end_of_a_batch() -> None:
    assert list(guided(25, 2, 12, 1)) == [(0, 12), (12, 19), (19, 22), (22, 24), (24, 25)]
    assert list(guided(2_500, 625, 625, 2)) == [(0, 625), (625, 1250), (1250, 1875), (1875, 2500)]
    assert list(guided(10, 3, 3, 2)) == [(0, 3), (3, 6), (6, 9), (9, 10)]  # fixed: even
    many = list(guided(10_000, 10, 1_000, 4))
    assert many[0] == (0, 1_000) and many[-1][1] == 10_000
    sizes = [hi - lo for lo, hi in many]
    assert sizes == sorted(sizes, reverse=True) and min(sizes[:-1]) == 10


def test_a_job_cut_with_a_far_dearer_cost_is_re_cut_into_guided_chunks() -> None:
    """Items of 20 ms after the node measured the function at 0.3 s (one chunk of
    one item each): re-cut, from the job's own cost, into chunks from 0.25 s down."""
    sizer = ChunkSizer(1)
    sizer.observe(FN, 1, 0.3, "earlier")
    s = Scheduler(1, sizer)
    s.accept(delivery("nap", 0, 25))
    assert {c.size for c in s.pending} == {1}
    sent = drain(s)
    s.done(sent[0], took(sent[0], 0.02))
    assert [c.size for c in s.pending] == [12, 6, 3, 2]  # the 23 items left


def test_a_batch_s_last_chunks_shrink_below_the_chunksize() -> None:
    """The seed's (a): 25 items of 3.6 ms, chunksize 7 (a quarter of the batch).
    Its last chunks go down to about TAIL_SECONDS of work, so that the job's
    last chunk does not run alone while the other process idles."""
    sizer = ChunkSizer(2)
    dear_history(sizer)
    s = Scheduler(2, sizer)
    s.accept(delivery("a", 0, 25))
    sizes = [c.size for c in s.pending]
    assert sizes[0] == 7 and sum(sizes) == 25
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[-1] == max(1, int(TAIL_SECONDS / DEAR)) < 7


def test_a_fixed_chunksize_is_kept_to_the_end_of_a_batch() -> None:
    sizer = ChunkSizer(2)
    dear_history(sizer)
    s = Scheduler(2, sizer)
    s.accept(delivery("a", 0, 25, chunksize=7))
    assert [c.size for c in s.pending] == [7, 7, 7, 4]
