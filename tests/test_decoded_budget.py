"""Memory on decoded size, not wire size: a node budgets the items it holds by
an estimate made from a payload's bytes before it decodes anything
(``taskfan.limits.decoded_size``, ``worker.core.decoded_budget``)."""

from __future__ import annotations

import json
import pickle
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client
from taskfan.keys import QueueKeys
from taskfan.limits import MiB, decoded_size
from taskfan.options import CallMode, TaskOptions
from taskfan.protocol import BatchEntry
from tests import tasks
from tests.conftest import StartWorker
from tests.helpers import dead_letters, wait_until
from worker.core.batches import Completed, Delivery
from worker.core.chunk_sizing import ChunkSizer
from worker.core.entry_checks import Guard
from worker.core.scheduler import Scheduler

QUEUE = QueueKeys("default")
N = 20_000

#: shapes that take many times their bytes once decoded; distinct objects, so
#: that pickle cannot share them
SHAPES: dict[str, Callable[[], list[Any]]] = {
    "empty lists": lambda: [[] for _ in range(N)],
    "empty dicts": lambda: [{} for _ in range(N)],
    "lists of 0": lambda: [[0] for _ in range(N)],
    "nested lists": lambda: [[[[]]] for _ in range(N)],
    "two-character strings": lambda: [str(10 + i % 90) for i in range(N)],
    "astral characters": lambda: [chr(0x1F600 + i % 50) * 2 for i in range(N)],
    "floats": lambda: [float(i) for i in range(N)],
    "small dicts": lambda: [{"a": i, "b": [i]} for i in range(N)],
    "tuples": lambda: [(i,) for i in range(N)],
    "sets (pickle only)": lambda: [set() for _ in range(N)],
}
CODECS: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
    "json": (lambda v: json.dumps(v, ensure_ascii=False).encode(), json.loads),
    "pickle": (lambda v: pickle.dumps(v, protocol=5), pickle.loads),
}


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_estimate_is_at_least_what_decoding_takes(shape: str, codec: str) -> None:
    dumps, loads = CODECS[codec]
    try:
        payload = dumps(SHAPES[shape]())
    except TypeError:
        pytest.skip(f"{codec} cannot carry {shape}")
    tracemalloc.start()
    try:
        value = loads(payload)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del value
    estimate, _ = decoded_size(codec, payload)
    assert estimate >= peak, (shape, codec, len(payload), peak, estimate)


def _delivery(
    index: int,
    items: list[Any],
    job_id: str = "0123456789abcdef",
    options: TaskOptions = TaskOptions(),  # noqa: B008 - frozen
) -> Delivery:
    payload = json.dumps(items, separators=(",", ":")).encode()
    entry = BatchEntry(job_id, index, 0, len(items), "tests.tasks:identity", "json",
                       CallMode.ONE, 0, payload, options)  # fmt: skip
    fields = {k.encode(): v if isinstance(v, bytes) else str(v).encode()
              for k, v in entry.fields().items()}  # fmt: skip
    return Delivery(QUEUE, f"1-{index}".encode(), fields)


def _scheduler(budget: int) -> Scheduler:
    return Scheduler(1, ChunkSizer(1), guard=Guard(max_decoded_bytes=budget))


def test_a_batch_estimated_over_the_budget_is_refused_before_it_is_decoded() -> None:
    s = _scheduler(1 * MiB)
    completed = s.accept(_delivery(0, [[] for _ in range(10_000)]))  # 30,001 bytes
    assert isinstance(completed, Completed) and completed.dead_reason is not None
    reason = completed.dead_reason
    assert "batch 0: its payload of 29.3 KiB (10001 containers, 2 chunks)" in reason
    assert "would take about 1.4 MiB decoded" in reason
    assert "over this node's max_decoded_bytes (1 MiB)" in reason
    assert completed.failed == 10_000 and not s.batches


def test_the_chunks_a_batch_is_cut_into_count_in_its_estimate() -> None:
    """One item per chunk under a hard timeout: 300,000 zeros take 0.6 MB on the
    wire, 9 MiB by the payload's estimate, and 46 MiB more of chunks."""
    s = _scheduler(32 * MiB)
    items = [0] * 300_000
    assert s.accept(_delivery(0, items)) is None  # a few chunks: it fits
    completed = s.accept(_delivery(1, items, options=TaskOptions(hard_timeout=1.0)))
    assert isinstance(completed, Completed) and completed.dead_reason is not None
    assert "(1 containers, 300000 chunks) would take about 54.9 MiB" in completed.dead_reason


def test_a_batch_that_does_not_fit_beside_those_held_waits_undecoded() -> None:
    s = _scheduler(600 * 1024)
    items: list[list[int]] = [[] for _ in range(2_500)]  # 400 KiB by the estimate: two do not fit
    assert s.accept(_delivery(0, items)) is None
    assert s.accept(_delivery(1, items)) is None
    first, second = (s.batches[(QUEUE.name, f"1-{i}".encode())] for i in range(2))
    assert first.items and not second.items  # the second is held, not decoded
    assert s.batches_wanted() == 0 and s.budget.held == first.decoded
    assert s.unpark() == []  # no room yet
    while (chunk := s.next_chunk()) is not None:
        assert chunk.batch is first
        s.in_pool.discard(chunk)
    s.release(first.delivery)
    assert s.unpark() == [] and second.items == items and s.budget.held == second.decoded
    chunk = s.next_chunk()
    assert chunk is not None and chunk.batch is second


def test_a_node_dead_letters_a_batch_that_decodes_too_large_and_keeps_serving(
    redis_url: str, r: redis.Redis, start_worker: StartWorker
) -> None:
    client = Client.from_url(redis_url, codec="json")
    # One item of 1.5 MiB of empty lists: 30 MiB as Python objects, about 74 MiB estimated.
    hostile = client.map(tasks.identity, [[[]] * 500_000, [1]], batch_size=2)
    worker = start_worker("--no-pickle", "--max-decoded-bytes", "32M", processes=1)
    outcomes = list(hostile.outcomes(timeout=60))
    assert [o.ok for o in outcomes] == [False, False], worker.log()
    error = outcomes[0].error
    assert error is not None and error.type == "BatchTooLarge", error
    assert "(500003 containers, 2 chunks) would take about" in error.message, error.message
    assert "over this node's max_decoded_bytes (32 MiB)" in error.message
    letters: Any = dead_letters(r, QUEUE.name)
    assert [fields[b"reason"] for _, fields in letters] == [error.message.encode()]
    good = client.map(tasks.identity, [[[]] * 1000] * 20, batch_size=5)
    assert list(good.results(timeout=60)) == [[[]] * 1000] * 20
    assert worker.proc.poll() is None and "Traceback" not in worker.log()


def _peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_node_holds_no_more_decoded_items_than_its_budget(
    redis_url: str, r: redis.Redis, start_worker: StartWorker
) -> None:
    """Six batches of 1.2 MiB of empty lists (20 MiB decoded each, 60 MiB by the
    estimate) sent at once: a node with a budget of 64 MiB decodes one at a time.
    Its peak resident set grows by less than the budget (docs/operations.md)."""
    client = Client.from_url(redis_url, codec="json")
    worker = start_worker("--no-pickle", "--max-decoded-bytes", "64M", processes=1)
    warm = client.map(tasks.identity, [[[]] * 10] * 10, batch_size=5)  # imports, pool, caches
    assert len(list(warm.results(timeout=60))) == 10
    baseline = _peak_rss(worker.pid)
    jobs = [client.map(tasks.noop, [[]] * 400_000, batch_size=400_000) for _ in range(6)]
    for job in jobs:
        assert job.wait(timeout=120), worker.log()
        assert job.progress().failed == 0
    grown = _peak_rss(worker.pid) - baseline
    wait_until(lambda: worker.proc.poll() is None, timeout=1)
    assert grown < 64 * MiB, f"the node's peak grew by {grown / MiB:.0f} MiB"


def test_a_waiting_batch_whose_job_ended_is_let_go_and_stops_blocking_reads() -> None:
    s = _scheduler(600 * 1024)
    items: list[list[int]] = [[] for _ in range(2_500)]
    assert s.accept(_delivery(0, items)) is None
    assert s.accept(_delivery(1, items, job_id="fedcba9876543210")) is None
    assert s.budget.full()  # the second waits for room: read nothing more
    (completed,) = s.ended({"fedcba9876543210": "the job was cancelled"})
    assert completed.delivery.entry_id == b"1-1" and completed.skipped
    s.release(completed.delivery)
    assert s.unpark() == [] and not s.budget.parked
    assert not s.budget.full()  # though batch 0 still holds most of the budget
