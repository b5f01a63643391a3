"""taskfan's own queues as a source of batches: the queue streams.

``StreamsSource`` is the ``worker.sources.base.Source`` of the queues a node
serves with ``--queue``: its reader thread reads entries when the node asks
(XREADGROUP, and XAUTOCLAIM for entries whose lease lapsed), its writer thread
records finished batches and acknowledges them (record.lua, XACK + XDEL), and
the entries it holds (``HeldEntries``) are leases the node's heartbeat renews
(XCLAIM ... JUSTID) and that it hands back with a large idle time when the node
lets them go. Its entries go through the node's intake (``Scheduler.accept``):
their checks, their decoding and their job's liveness.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from redis.exceptions import ResponseError

from taskfan.keys import QueueKeys
from taskfan.logs import batch_extra
from worker.core.batches import Batch, Completed, Delivery
from worker.sources.base import NodeParts
from worker.sources.streams.announcements import Announcements
from worker.sources.streams.held_entries import HeldEntries
from worker.sources.streams.io_threads import Reader, Writer

#: a node's lines about its batches keep the logger name operators filter by
#: (docs/operations.md), the node's own
log = logging.getLogger("worker.node")


class StreamsSource:
    def __init__(self, parts: NodeParts) -> None:
        settings = parts.settings
        self.settings = settings
        self.stats = parts.stats
        self.clock = parts.clock
        self.allow = settings.allow
        self.redis = parts.node_redis
        self._queues = frozenset(self.redis.queues)
        #: calls taken, announced to their producers once they ran a moment
        self.announcements = Announcements(self.redis.announce)
        #: the stream entries of the batches held: the heartbeat renews their leases
        self.held = HeldEntries(self.redis, settings.visibility_timeout, self.announcements)
        self.writer = Writer(self.redis, parts.events, self, self.announcements)
        self.reader = Reader(self.redis, settings, parts.events, self, self._taken)

    def _taken(self, found: Sequence[Delivery]) -> None:
        """The reader handed these on: their calls are announced in a moment,
        by the writer (woken to time it if it sleeps), unless recorded first."""
        if self.announcements.later(found):
            self.writer.wake()

    def labels(self) -> list[str]:
        return list(self.settings.queues)

    def record_fields(self) -> Mapping[str, str]:
        return {}

    def prepare(self) -> None:
        """Nothing of its own: the node's ``NodeRedis.prepare`` creates the
        consumer groups and loads the scripts."""

    def threads(self) -> list[tuple[str, Callable[[], None]]]:
        return [("reader", self.reader.run), ("writer", self.writer.run)]

    def request(self, batches: int) -> None:
        self.reader.request(batches)

    def owns(self, delivery: Delivery) -> bool:
        return delivery.queue in self._queues

    def arrived(self, entries: Sequence[Delivery]) -> list[Delivery]:
        taken = []
        for delivery in entries:
            if self.held.holds(delivery):
                # Our own XAUTOCLAIM took back an entry we still run: its lease lapsed
                # (heartbeats stalled past the visibility timeout). The claim renewed
                # it; running it twice here would record it twice.
                log.warning(
                    "queue %s: %s (entry %s) was reclaimed by this node, which still holds "
                    "it (its heartbeats stalled past the visibility timeout); not running it "
                    "twice",
                    delivery.queue.name, _name(delivery), delivery.entry_id.decode(),
                )  # fmt: skip
                continue
            if delivery.fields is not None and not delivery.skip:
                self.held.hold(delivery)
            taken.append(delivery)
        return taken

    def started(self, delivery: Delivery, lo: int, hi: int) -> None:
        """Nothing to record: a stream entry's lease covers it from its read."""

    def complete(self, completed: Completed, batch: Batch | None) -> None:
        self.writer.put(completed)
        self.stats.completed(completed)
        if not completed.job_id or not log.isEnabledFor(logging.INFO):
            return  # (its line's fields cost a few percent of a small batch's node CPU)
        delivery = completed.delivery
        elapsed = self.clock() - batch.started if batch else 0.0
        retries = batch.retried if batch else 0
        items = completed.ok + completed.failed
        log.info(
            "job %s batch %s: %d items, %d failed, %.3fs%s%s",
            completed.job_id,
            completed.field,
            items,
            completed.failed,
            elapsed,
            f", {retries} retries" if retries else "",
            f" (reclaimed: delivery {delivery.deliveries})" if delivery.deliveries > 1 else "",
            extra=batch_extra(
                completed.job_id, completed.field, items=items, failed=completed.failed,
                seconds=round(elapsed, 6), retries=retries,
            ),
        )  # fmt: skip

    def written(self, completed: Completed) -> None:
        self.held.forget(completed.delivery)

    def give_back(self, delivery: Delivery) -> None:
        self.held.give_back(delivery)

    def hand_back(self, deliveries: Sequence[Delivery]) -> None:
        self.held.hand_back(_by_queue(deliveries))
        for delivery in deliveries:
            self.held.forget(delivery)

    def beat(self) -> None:
        held = self.held.snapshot()
        if held:
            self.redis.refresh(held)
        with contextlib.suppress(ResponseError):  # refused: every batch's job is checked
            self.redis.sync_clock()

    def stop_reading(self) -> None:
        self.reader.stop_reading()

    def close(self, cold: bool, held: Sequence[Batch]) -> None:
        """End the reader; the writer ends once what it was given is written. A
        cold stop hands back every entry still held (the batches ``held``, and
        those whose record the writer has yet to write)."""
        self.reader.close()
        self.writer.close()
        if cold and self.held.snapshot():
            self.held.hand_back()

    def after_threads(self, late: Sequence[Delivery]) -> None:
        if late:
            self.held.hand_back(_by_queue(late))


def _by_queue(deliveries: Sequence[Delivery]) -> dict[QueueKeys, list[Any]]:
    """Entry ids by queue, for ``NodeRedis.hand_back``."""
    out: dict[QueueKeys, list[Any]] = {}
    for delivery in deliveries:
        out.setdefault(delivery.queue, []).append(delivery.entry_id)
    return out


def _name(delivery: Delivery) -> str:
    """``job J batch B`` from an entry's fields, for a log line; else ``batch``."""
    fields = delivery.fields or {}
    job, index = fields.get(b"j"), fields.get(b"b")
    if job is None or index is None:
        return "batch"
    return f"job {job.decode(errors='replace')} batch {index.decode(errors='replace')}"
