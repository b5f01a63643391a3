"""Nodes that cannot import a function do not fail its items (issue 14, item 5).

A node started without the task module on its path (or whose ``--allow`` list
leaves the function out) hands each batch of it back, its delivery undone, and
publishes the function in its node record; the items fail, saying why, only
when no live node serving the queue can run it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client
from taskfan import keys
from taskfan.keys import QueueKeys
from taskfan.options import CallMode
from taskfan.protocol import BatchEntry
from tests.cli_support import invoke
from tests.conftest import StartWorker
from tests.helpers import wait_until
from tests.workers import WorkerProcess
from worker.core.batches import Delivery
from worker.core.chunk_sizing import ChunkSizer
from worker.core.scheduler import Scheduler
from worker.core.unrunnable import Peer, Unrunnable, parse_peer
from worker.pool.child import ChunkResult

FAST_NODE = {"TASKFAN_HEARTBEAT_INTERVAL": "0.5", "TASKFAN_VISIBILITY_TIMEOUT": "2"}
FN = "lifemod:square"


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    """A task module only nodes given ``--path`` to it can import."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "lifemod.py").write_text("def square(x):\n    return x * x\n")
    return folder


def bad_node(start_worker: StartWorker, task_dir: Path, kind: str) -> WorkerProcess:
    if kind == "import":  # started where the module is not: the repository root
        return start_worker(processes=1, env=FAST_NODE)
    return start_worker("--path", str(task_dir), "--allow", "tests", processes=1, env=FAST_NODE)


def record(r: redis.Redis, node: str) -> dict[str, str]:
    raw: Any = r.hgetall(keys.node(node))
    return {k.decode(): v.decode() for k, v in raw.items()}


def node_ids(r: redis.Redis) -> list[str]:
    listed: Any = r.zrange(keys.NODES, 0, -1)
    return [n.decode() for n in listed]


def cannot_run(r: redis.Redis) -> dict[str, dict[str, str]]:
    """node id -> its record's cannot_run, for the nodes that report any."""
    out = {}
    for node in node_ids(r):
        found = json.loads(record(r, node).get("cannot_run") or "{}")
        if found:
            out[node] = found
    return out


@pytest.mark.parametrize("kind", ["import", "allow"])
def test_a_node_that_cannot_run_a_function_hands_its_batches_to_one_that_can(
    kind: str, task_dir: Path, start_worker: StartWorker, redis_url: str, r: redis.Redis
) -> None:
    bad = bad_node(start_worker, task_dir, kind)
    good = start_worker("--path", str(task_dir), processes=1, env=FAST_NODE)
    wait_until(lambda: len(node_ids(r)) == 2, timeout=30, message=bad.log)
    client = Client.from_url(redis_url, codec="json")
    # Both read batches from the start: the bad one hands back what it takes.
    job = client.map(FN, range(2000), batch_size=20)
    assert job.wait(timeout=120), good.log() + bad.log()
    meta = job.meta()
    assert (meta.ok, meta.failed) == (2000, 0), bad.log()
    assert list(job.results()) == [x * x for x in range(2000)]
    # The bad node says which function and why: in its record (published at its
    # next heartbeat, maybe after the job ended) and once in its log.
    wait_until(lambda: cannot_run(r), timeout=10, message=lambda: "the bad node to report "
               f"what it cannot run (did it take a batch?):\n{bad.log()}")  # fmt: skip
    (reported,) = cannot_run(r).values()
    why = "No module named 'lifemod'" if kind == "import" else "outside its allowlist"
    assert why in reported[FN]
    log = bad.log()
    assert log.count(f"cannot run {FN}") == 1 and why in log
    (bad_id,) = cannot_run(r)
    # ... each batch about once or twice, not in a loop of reclaiming its own
    # hand-backs (a read of nothing it can run pauses its reads for a heartbeat).
    assert 0 < int(record(r, bad_id)["batches_given_back"]) < 200
    # No delivery was used up by handing back: nothing was dead-lettered.
    assert r.xlen(QueueKeys("default").dead) == 0
    shown = invoke("nodes", "--redis-url", redis_url)
    assert FN in shown.stdout and why in shown.stdout, shown.stdout


@pytest.mark.parametrize("kind", ["import", "allow"])
def test_items_fail_explained_when_no_live_node_can_run_the_function(
    kind: str, task_dir: Path, start_worker: StartWorker, redis_url: str, r: redis.Redis
) -> None:
    bad = bad_node(start_worker, task_dir, kind)
    wait_until(lambda: len(node_ids(r)) == 1, timeout=30, message=bad.log)
    client = Client.from_url(redis_url, codec="json")
    began = time.monotonic()
    job = client.map(FN, range(40), batch_size=4)
    assert job.wait(timeout=30), bad.log()
    assert time.monotonic() - began < 20  # about two heartbeats, plus reclaim checks
    errors = [o.error for o in job.outcomes() if o.error]
    assert len(errors) == 40
    wanted = "FunctionReferenceError" if kind == "import" else "FunctionNotAllowed"
    assert {e.type for e in errors} == {wanted}
    assert all(
        "no live node serving queue default can run lifemod:square" in e.message for e in errors
    )
    why = "No module named 'lifemod'" if kind == "import" else "outside its allowlist"
    assert all(why in e.message for e in errors)


def test_the_verdict_waits_for_every_live_node_serving_the_queue() -> None:
    u = Unrunnable("n1")
    assert u.verdict("q", FN) is None
    u.note(FN, "FunctionReferenceError", "No module named 'lifemod'", "q")
    assert u.verdict("q", FN) == ("FunctionReferenceError", "")  # hand back
    can = Peer("n2", ("q",), {})
    cannot = Peer("n3", ("q",), {FN: "FunctionReferenceError: no module"})
    elsewhere = Peer("n4", ("other",), {})
    u.decide(["q"], [can, cannot, elsewhere])
    assert u.verdict("q", FN) == ("FunctionReferenceError", "")  # n2 may run it
    u.decide(["q"], [cannot, elsewhere])
    verdict = u.verdict("q", FN)
    assert verdict is not None
    why = verdict[1]
    assert "no live node serving queue q can run lifemod:square" in why
    assert "all 2 live nodes serving it report it" in why and "n3: " in why
    assert json.loads(u.published()) == {FN: "FunctionReferenceError: No module named 'lifemod'"}


def test_a_peer_record_that_cannot_be_read_counts_as_nothing() -> None:
    assert parse_peer("n", b"not json", b"{not json") == Peer("n", ("not json",), {})
    assert parse_peer("n", None, b"[1]") == Peer("n", (), {})
    assert parse_peer("n", b'["q"]', b'{"f": "why"}') == Peer("n", ("q",), {"f": "why"})
    deep = b"[" * 100_000  # nested past the recursion limit: anyone can write a record
    assert parse_peer("n", deep, b'{"f": ' + deep).cannot_run == {}


def test_the_scheduler_lets_a_whole_batch_go_when_its_function_cannot_be_imported() -> None:
    """The first chunk back says so: the batch goes back whole, and its other
    chunks' results, when they come, are of no use and change nothing."""
    scheduler = Scheduler(1, ChunkSizer(1, fixed=2))
    entry = BatchEntry("job1", 0, 0, 6, FN, "json", CallMode.ONE, 0, b"[1,2,3,4,5,6]")
    fields = {k.encode(): v if isinstance(v, bytes) else str(v).encode()
              for k, v in entry.fields().items()}  # fmt: skip
    assert scheduler.accept(Delivery(QueueKeys("default"), b"1-0", fields)) is None
    first, second = scheduler.next_chunk(), scheduler.next_chunk()
    assert first is not None and second is not None
    scheduler.sent(first, 0.0)
    scheduler.sent(second, 0.0)
    failed = ChunkResult((), 0.0, unrunnable=("FunctionReferenceError", "No module named 'x'"))
    handed = scheduler.cannot_run(first, *failed.unrunnable)  # type: ignore[misc]
    assert handed is not None and handed.give_back and handed.delivery.entry_id == b"1-0"
    assert not scheduler.batches and not scheduler.pending
    assert scheduler.done(second, failed) is None  # a late chunk of a batch let go
    assert not scheduler.in_pool
    # Its next delivery goes straight back, before its payload is decoded.
    again = scheduler.accept(Delivery(QueueKeys("default"), b"1-0", fields, deliveries=2))
    assert again is not None and again.give_back
