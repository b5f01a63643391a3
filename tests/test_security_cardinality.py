"""Threat: untrusted entries grow a node's memory and its /metrics page without bound.

Anyone who can write to Redis can add entries, each naming a function of its
choosing. A node counts what it did per queue and function; if every forged
name became a label of its own, 20,000 forged entries would grow the node by
tens of MiB and its metrics page by hundreds. Refused and unverified batches
count under one fixed label, a function reference has a length limit (at
enqueue and on nodes), and per-function counters track at most
``worker.services.stats.MAX_FUNCTIONS`` functions, the rest under ``(other)``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest

from producer import Client
from taskfan.errors import FunctionReferenceError, ProtocolError
from taskfan.keys import QueueKeys
from taskfan.options import CallMode
from taskfan.protocol import BatchEntry
from taskfan.refs import MAX_REF_LENGTH, reference
from taskfan.settings import Settings
from tests.conftest import StartWorker
from tests.helpers import free_port, scrape, wait_until
from worker.core.batches import Delivery
from worker.core.chunk_sizing import ChunkSizer
from worker.core.entry_checks import Guard
from worker.core.scheduler import Scheduler
from worker.core.unrunnable import MAX_TRACKED, Unrunnable
from worker.services.metrics import NodeCollector
from worker.services.stats import MAX_FUNCTIONS, OTHER, REFUSED, NodeStats, NodeView

SECRET = "cardinality-secret-0123456789"


def _page(stats: NodeStats) -> str:
    view = NodeView("n1", Settings(), 0.0, stats, batches=lambda: [],
                    pool_chunks=lambda: 0, pool_restarts=lambda: 0)  # fmt: skip
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(view))
    return generate_latest(registry).decode()


def test_per_function_counters_keep_the_first_functions_and_an_other_bucket() -> None:
    stats = NodeStats()
    for n in range(MAX_FUNCTIONS * 5):
        stats.batch("q", f"m:f{n}", ok=1, failed=0)
        stats.chunk(f"m:f{n}", 1, 0.001)
        stats.retried("q", f"m:f{n}", 1)
    functions = {fn for _, fn in stats.counts}
    assert len(functions) == MAX_FUNCTIONS + 1 and OTHER in functions
    assert len(stats.durations) == MAX_FUNCTIONS + 1 and OTHER in stats.durations
    assert stats.counts[("q", OTHER)].items_ok == MAX_FUNCTIONS * 4
    assert stats.durations[OTHER].count == MAX_FUNCTIONS * 4
    assert stats.totals().items_ok == MAX_FUNCTIONS * 5  # nothing is lost, only grouped
    stats.batch("q", "m:f0", ok=1, failed=0)  # a tracked function keeps its own label
    assert stats.counts[("q", "m:f0")].items_ok == 2
    assert len(_page(stats)) < 400 * 1024


def test_a_dead_lettered_batch_counts_under_one_fixed_label() -> None:
    from worker.core.batches import Completed, Delivery

    stats = NodeStats()
    for n in range(1000):
        fields = {b"j": b"0123456789abcdef", b"b": b"0", b"f": f"forged{n}:fn".encode()}
        delivery = Delivery(QueueKeys("q"), b"1-0", fields)
        stats.completed(Completed(delivery, "0123456789abcdef", "0", b"", 0, 1,
                                  dead_reason="bad signature: ..."))  # fmt: skip
    assert set(stats.counts) == {("q", REFUSED)}
    assert stats.counts[("q", REFUSED)].batches_dead == 1000


def test_a_function_reference_has_a_length_limit_at_enqueue_and_on_nodes() -> None:
    long_ref = "m:" + "f" * MAX_REF_LENGTH
    with pytest.raises(FunctionReferenceError, match="longer than"):
        reference(long_ref)
    fields = {b"j": b"0123456789abcdef", b"b": b"0", b"s": b"0", b"n": b"1",
              b"f": long_ref.encode(), b"c": b"json", b"m": b"1", b"p": b"[1]"}  # fmt: skip
    with pytest.raises(ProtocolError, match="field 'f'"):
        BatchEntry.parse(fields, "entry 1-0")


@pytest.mark.parametrize("secret", [True, False], ids=["signed-node", "open-node"])
def test_thousands_of_forged_function_names_leave_the_metrics_page_bounded(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, secret: bool
) -> None:
    """Forged entries, each naming a function of its own, for a job that exists:
    a node with a secret refuses them unverified, a node without one fails them
    (no such module); either way its page stays small."""
    forged = 3000
    port = free_port()
    env = {"TASKFAN_SECRET": SECRET} if secret else {}
    worker = start_worker("--metrics-port", str(port), "--metrics-host", "127.0.0.1", env=env)
    client = Client.from_url(redis_url, secret=SECRET if secret else None)
    job = client.map(abs, [1], batch_size=1)  # a real job, so forged entries are counted
    assert job.wait(timeout=60)
    stream = QueueKeys("default").stream
    pipe: Any = r.pipeline(transaction=False)
    for n in range(forged):
        entry = BatchEntry(job.id, n + 1, 0, 1, f"forged_module_{n}:fn", "json",
                           CallMode.ONE, 0, b"[1]")  # fmt: skip
        pipe.xadd(stream, entry.fields())
    pipe.execute()

    def processed() -> float:
        try:
            page = scrape(port)
        except OSError:
            return -1
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in page.splitlines()
            if line.startswith("taskfan_batches_processed_total{")
        )

    wait_until(lambda: processed() >= forged + 1, timeout=180,
               message=lambda: f"forged entries processed:\n{worker.log()[-2000:]}")  # fmt: skip
    page = scrape(port)
    assert len(page) < 400 * 1024, len(page)
    assert page.count("forged_module_") <= 3 * MAX_FUNCTIONS * 10


def test_a_node_tracks_a_bounded_number_of_functions_it_cannot_run() -> None:
    """Forged entries naming thousands of unimportable functions: past the number a
    node record can publish, a function's items fail at once instead of being
    handed back (and remembered) for ever."""
    unrunnable = Unrunnable("n1")
    for n in range(MAX_TRACKED * 50):
        noted = unrunnable.note(f"forged{n}:fn", "FunctionReferenceError", "no module", "q")
        assert noted is (n < MAX_TRACKED)
    assert len(unrunnable.cannot) == MAX_TRACKED
    assert unrunnable.verdict("q", f"forged{MAX_TRACKED * 2}:fn") is None
    assert len(json.loads(unrunnable.published())) == MAX_TRACKED  # every one reaches peers


def _wire(value: str | bytes | int) -> bytes:
    """A field value as Redis gives it back."""
    return value if isinstance(value, bytes) else str(value).encode()


def test_past_the_bound_a_function_outside_the_allowlist_fails_at_once() -> None:
    scheduler = Scheduler(1, ChunkSizer(1), guard=Guard(allow=("tests.tasks",)))
    for n in range(MAX_TRACKED + 5):
        entry = BatchEntry("0123456789abcdef", n, n, 1, f"forged{n}:fn", "json",
                           CallMode.ONE, 1, b"[1]")  # fmt: skip
        fields = {name.encode(): _wire(value) for name, value in entry.fields().items()}
        completed = scheduler.accept(Delivery(QueueKeys("q"), f"{n}-0".encode(), fields))
        assert completed is not None
        if n < MAX_TRACKED:
            assert completed.give_back, n  # for a node that may run it
        else:
            assert not completed.give_back and completed.failed == 1, n
    assert len(scheduler.intake.unrunnable.cannot) == MAX_TRACKED
