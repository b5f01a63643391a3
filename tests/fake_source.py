"""A source of batches for in-process node tests: no Redis, no threads of its own.

``FakeSource`` builds its batches itself (as the RQ source does), hands them out
one per read, records what the node completes, and keeps every other thing the
node asks of it (started chunks, batches given and handed back, what a cold stop
settles, reads that land after the loop) for the test to look at. ``fake_node``
builds a ``Node`` on such sources, through the node's own wiring
(``worker.node.wiring``), its process pool real.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskfan.codec import PICKLE
from taskfan.keys import QueueKeys
from taskfan.options import CallMode, TaskOptions
from taskfan.outcomes import decode_chunk
from taskfan.protocol import BatchEntry
from taskfan.settings import Settings
from tests.test_node_inprocess import FakeQueue
from worker.core.batches import Batch, Completed, Delivery
from worker.node.messages import Read, Written
from worker.node.node import Node
from worker.sources.base import NodeParts, Source


@dataclass(frozen=True)
class Job:
    """What a fake source's batches run: ``fn`` on each item, called as ``mode`` says."""

    fn: str = "tests.tasks:sleep"
    mode: CallMode = CallMode.ONE
    options: TaskOptions = field(default_factory=TaskOptions)


class FakeSource:
    """A source of ``batches`` (one list of items each), read one per request."""

    allow: tuple[str, ...] = ()

    def __init__(
        self,
        parts: NodeParts,
        batches: Sequence[Sequence[object]],
        job: Job = Job(),
        name: str = "fake",
        answer_late: bool = False,
        fields: Mapping[str, str] | None = None,
    ) -> None:
        self.events = parts.events
        self.clock = parts.clock
        self.queue = QueueKeys(name)
        self.job = job
        #: what it adds to the node record
        self.fields = dict(fields or {})
        #: hold each request unanswered until ``close`` (a read under way as the loop ends)
        self.answer_late = answer_late
        self.waiting = [self._batch(i, list(items)) for i, items in enumerate(batches)]
        self._lock = threading.Lock()
        self.requests = 0
        self._asked = 0
        self.started_items: list[tuple[bytes, int, int]] = []
        self.recorded: dict[bytes, list[object]] = {}
        self.given_back: list[bytes] = []
        self.handed_back: list[bytes] = []
        #: on close: (cold, each held batch's entry id and the offsets of its parts so far)
        self.settled: list[tuple[bool, list[tuple[bytes, list[int]]]]] = []
        self.late: list[bytes] = []
        self.stopped_reading = threading.Event()
        self.closed = threading.Event()

    def _batch(self, index: int, items: list[object]) -> Batch:
        entry = BatchEntry(
            job_id=f"{self.queue.name}-job", index=index, start=0, count=len(items),
            fn_ref=self.job.fn, codec="pickle", mode=self.job.mode, chunksize=1, payload=b"",
            options=self.job.options,
        )  # fmt: skip
        delivery = Delivery(self.queue, f"{self.queue.name}-{index}".encode(), None)
        return Batch(delivery, entry, items, self.clock(), remaining=len(items))

    def _answer(self) -> None:
        with self._lock:
            found, self.waiting = self.waiting[:1], self.waiting[1:]
        self.events.put(Read(self, batches=found, found=bool(found)))

    # ---------------------------------------------------------------- Source

    def labels(self) -> list[str]:
        return [self.queue.name]

    def record_fields(self) -> Mapping[str, str]:
        return self.fields

    def prepare(self) -> None:
        pass

    def threads(self) -> list[tuple[str, Callable[[], None]]]:
        return []

    def request(self, batches: int) -> None:
        self.requests += 1
        if self.answer_late:
            self._asked += 1
        else:
            self._answer()

    def arrived(self, entries: Sequence[Delivery]) -> list[Delivery]:
        return list(entries)

    def owns(self, delivery: Delivery) -> bool:
        return delivery.queue == self.queue

    def started(self, delivery: Delivery, lo: int, hi: int) -> None:
        self.started_items.append((delivery.entry_id, lo, hi))

    def complete(self, completed: Completed, batch: Batch | None) -> None:
        assert batch is not None
        values: list[object] = []
        for lo in sorted(batch.blobs):
            values += decode_chunk(batch.blobs[lo], PICKLE, "fake")[0]
        self.recorded[completed.delivery.entry_id] = values
        self.events.put(Written(self, Completed.counted(completed.delivery, len(values), 0)))

    def written(self, completed: Completed) -> None:
        pass

    def give_back(self, delivery: Delivery) -> None:
        self.given_back.append(delivery.entry_id)

    def hand_back(self, deliveries: Sequence[Delivery]) -> None:
        self.handed_back += [d.entry_id for d in deliveries]

    def beat(self) -> None:
        pass

    def stop_reading(self) -> None:
        self.stopped_reading.set()

    def close(self, cold: bool, held: Sequence[Batch]) -> None:
        self.settled.append((cold, [(b.delivery.entry_id, sorted(b.blobs)) for b in held]))
        while self._asked:  # its reader delivers as it ends: after the node's loop
            self._asked -= 1
            self._answer()
        self.closed.set()

    def after_threads(self, late: Sequence[Delivery]) -> None:
        self.late += [d.entry_id for d in late]


def fake_node(
    *sources: Callable[[NodeParts], FakeSource], **settings: object
) -> tuple[Node, list[FakeSource]]:
    """A node on the fake sources ``sources`` build (in their order), with one
    process and quick beats unless ``settings`` say otherwise."""
    made: list[FakeSource] = []

    def build(parts: NodeParts) -> list[Source]:
        made.extend(make(parts) for make in sources)
        return list(made)

    options: dict[str, Any] = {
        "processes": 1,
        "heartbeat_interval": 0.2,
        "block_seconds": 0.2,
        **settings,
    }
    node = Node(Settings(**options), node_redis=FakeQueue([]), sources=build)
    return node, made
