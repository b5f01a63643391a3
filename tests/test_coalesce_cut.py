"""How submitted calls are cut into shared batches (``producer.executor.coalesce``),
with no Redis: indexes per callable, runs around a gap, the caps by count,
bytes and published cost."""

from __future__ import annotations

from producer.callables import Described
from producer.executor.coalesce import (
    BATCH_BYTES,
    MAX_CALLS,
    UNKNOWN_COST_CALLS,
    Call,
    calls_per_batch,
    cut,
)
from producer.executor.futures import CallFuture

F, G = Described("tests.tasks:identity"), Described("tests.tasks:square")


def call(described: Described = F, size: int = 10, index: int = -1) -> Call:
    return Call(CallFuture(), described, ((), {}), size, index)


def shape(batches: list[list[Call]]) -> list[list[int]]:
    return [[c.index for c in batch] for batch in batches]


def test_new_calls_get_consecutive_indexes_per_callable() -> None:
    calls = [call(F), call(G), call(F), call(G), call(F)]
    batches, next_index = cut(calls, 10, lambda _: 100)
    assert shape(batches) == [[10, 11, 12], [13, 14]]
    assert [b[0].called for b in batches] == [F, G]
    assert next_index == 15


def test_calls_sent_again_keep_their_indexes_and_are_cut_around_gaps() -> None:
    again = [call(index=i) for i in (7, 3, 4, 6)] + [call(G, index=5)]
    batches, next_index = cut([*again, call()], 8, lambda _: 100)
    assert shape(batches) == [[3, 4], [5], [6, 7], [8]]
    assert next_index == 9


def test_batches_stop_at_the_count_and_at_the_bytes() -> None:
    batches, _ = cut([call() for _ in range(7)], 0, lambda _: 3)
    assert shape(batches) == [[0, 1, 2], [3, 4, 5], [6]]
    big = BATCH_BYTES // 2 + 1
    batches, _ = cut([call(size=big), call(size=big), call(size=2 * BATCH_BYTES)], 0, lambda _: 9)
    assert shape(batches) == [[0], [1], [2]]  # one call larger than the cap goes alone


def test_calls_per_batch_follows_the_published_cost() -> None:
    assert calls_per_batch(None) == UNKNOWN_COST_CALLS
    assert calls_per_batch(0.0) == calls_per_batch(1e-9) == MAX_CALLS
    assert calls_per_batch(0.001) == 5  # 5 ms of one process's work
    assert calls_per_batch(10.0) == 1
