"""Sources of batches are plug-ins (``worker.sources``): the node core names none.

- No module of the node outside the RQ package (``worker/sources/rq/``) says
  "RQ", in code or in words: the seam is where the protocol says it is.
- The registry finds each source's plugin, in order, without importing RQ.
- A node reads from a source it has never heard of: a fake one, handed in,
  whose batches it runs on a real pool, records through the source, and hands
  back to it on a graceful stop.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from taskfan.codec import PICKLE
from taskfan.keys import QueueKeys
from taskfan.options import CallMode
from taskfan.outcomes import decode_chunk
from taskfan.protocol import BatchEntry
from taskfan.settings import Settings
from tests.cli_support import REPO
from tests.helpers import wait_until
from tests.test_node_inprocess import FakeQueue, drive
from worker.core.batches import Batch, Completed, Delivery, key
from worker.node.messages import Read, Written
from worker.node.node import Node
from worker.sources.base import NodeParts, Source
from worker.sources.registry import plugins

#: RQ as a word, or as part of a name (``rq_queues``, ``RqSource``, ``self._rq``)
RQ_WORD = re.compile(r"(?<![A-Za-z0-9])(?:rq|RQ|Rq)(?![a-z0-9])")


def test_the_pattern_finds_rq_in_its_forms() -> None:
    for text in ("import rq", "--rq-queue", "settings.rq_queues", "RqSource", "self._rq", "RQ's"):
        assert RQ_WORD.search(text), text
    for text in ("request", "irq", "required", "worker.sources", "rqa_", "Source"):
        assert not RQ_WORD.search(text), text


def test_no_module_of_the_node_outside_the_rq_package_names_rq() -> None:
    """The node, its core, its pool, its services and the other sources know no
    RQ: no import, no branch, no word (RQ lives in ``worker/sources/rq/``)."""
    worker = REPO / "worker"
    found = []
    for path in sorted(worker.rglob("*.py")):
        if path.is_relative_to(worker / "sources" / "rq"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if RQ_WORD.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_registry_finds_each_source_in_order() -> None:
    names = [plugin.name for plugin in plugins()]
    assert names[0] == "queue streams"  # asked first, listed first
    assert "RQ queues" in names


def test_reading_the_plugins_imports_no_source_library() -> None:
    code = (
        "import sys, worker.cli; from worker.sources.registry import plugins; plugins(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'rq'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------ a source the node never heard of

FAKE = QueueKeys("fake")


class FakeSource:
    """A source that builds its batches itself (as RQ's does), hands them out one
    per read, and keeps what the node asked of it."""

    allow: tuple[str, ...] = ()

    def __init__(self, parts: NodeParts, items: Sequence[Sequence[float]]) -> None:
        self.events = parts.events
        self.clock = parts.clock
        self.waiting = [self._batch(i, list(batch)) for i, batch in enumerate(items)]
        self.started_items: list[tuple[bytes, int, int]] = []
        self.recorded: dict[bytes, list[object]] = {}
        self.handed_back: list[bytes] = []
        self.closed = threading.Event()

    def _batch(self, index: int, items: list[float]) -> Batch:
        entry = BatchEntry(
            job_id="fake", index=index, start=0, count=len(items), fn_ref="tests.tasks:sleep",
            codec="pickle", mode=CallMode.ONE, chunksize=1, payload=b"",
        )  # fmt: skip
        delivery = Delivery(FAKE, f"f-{index}".encode(), None)
        return Batch(delivery, entry, items, self.clock(), remaining=len(items))

    def labels(self) -> list[str]:
        return ["fake"]

    def record_fields(self) -> Mapping[str, str]:
        return {"fake": "1"}

    def prepare(self) -> None:
        pass

    def threads(self) -> list[tuple[str, Callable[[], None]]]:
        return []

    def request(self, batches: int) -> None:
        found, self.waiting = self.waiting[:1], self.waiting[1:]
        self.events.put(Read(self, batches=found, found=bool(found)))

    def arrived(self, entries: Sequence[Delivery]) -> list[Delivery]:
        return list(entries)

    def owns(self, delivery: Delivery) -> bool:
        return delivery.queue == FAKE

    def started(self, delivery: Delivery, lo: int, hi: int) -> None:
        self.started_items.append((delivery.entry_id, lo, hi))

    def complete(self, completed: Completed, batch: Batch | None) -> None:
        assert batch is not None
        values: list[object] = []
        for lo in sorted(batch.blobs):
            values += decode_chunk(batch.blobs[lo], PICKLE, "fake")[0]
        self.recorded[completed.delivery.entry_id] = values
        done = Completed.counted(completed.delivery, len(values), 0)
        self.events.put(Written(self, done))

    def written(self, completed: Completed) -> None:
        pass

    def give_back(self, delivery: Delivery) -> None:
        self.handed_back.append(delivery.entry_id)

    def hand_back(self, deliveries: Sequence[Delivery]) -> None:
        self.handed_back += [d.entry_id for d in deliveries]

    def beat(self) -> None:
        pass

    def stop_reading(self) -> None:
        pass

    def close(self, cold: bool, held: Sequence[Batch]) -> None:
        self.closed.set()

    def after_threads(self, late: Sequence[Delivery]) -> None:
        pass


def _node(items: Sequence[Sequence[float]], **settings: object) -> tuple[Node, list[FakeSource]]:
    made: list[FakeSource] = []

    def sources(parts: NodeParts) -> list[Source]:
        made.append(FakeSource(parts, items))
        return list(made)

    options: dict[str, Any] = {
        "processes": 1,
        "heartbeat_interval": 0.2,
        "block_seconds": 0.2,
        **settings,
    }
    node = Node(Settings(**options), node_redis=FakeQueue([]), sources=sources)
    return node, made


def test_a_burst_node_runs_a_plugged_in_source_s_batches_and_records_them_through_it() -> None:
    node, (source,) = _node([[0.01, 0.02], [0.03]], burst=True)
    assert node.view.record()["fake"] == "1"  # its node record fields
    assert drive(node, lambda: None) == 0  # it ends once the source found nothing
    assert source.recorded == {b"f-0": [0.01, 0.02], b"f-1": [0.03]}
    assert sorted(source.started_items) == [(b"f-0", 0, 1), (b"f-0", 1, 2), (b"f-1", 0, 1)]
    assert source.handed_back == [] and source.closed.is_set()
    assert node.stats.totals().batches == 0  # the source counts its own (written())


def test_a_stopping_node_hands_a_plugged_in_source_s_unstarted_batch_back_to_it() -> None:
    node, (source,) = _node([[1.5, 1.5], [1.5, 1.5]], grace_period=60)

    def stop_while_batch_1_waits() -> None:
        wait_until(
            lambda: len(node.scheduler.batches) == 2 and len(node.scheduler.in_pool) == 2,
            timeout=60,
            message="batch 0 in the pool, batch 1 held",
        )
        node.stop()

    assert drive(node, stop_while_batch_1_waits) == 0
    assert source.recorded == {b"f-0": [1.5, 1.5]}
    assert source.handed_back == [b"f-1"]
    assert key(Delivery(FAKE, b"f-1", None)) not in node.scheduler.batches
