"""The stream entries a node holds, and handing them back.

The main thread adds an entry when it accepts a batch and removes it once the
batch is recorded and acknowledged, or handed back; the heartbeat thread reads
a snapshot each beat and renews their leases (``XCLAIM ... JUSTID``). Handing
back claims them with a large idle time, so that other nodes reclaim them at
their next check instead of after the visibility timeout.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from taskfan.keys import QueueKeys
from taskfan.transient import TRANSIENT
from worker.core.batches import Delivery
from worker.sources.streams.announcements import Announcements
from worker.sources.streams.batch_reads import call_of
from worker.sources.streams.redis_io import NodeRedis

log = logging.getLogger(__name__)


class HeldEntries:
    def __init__(
        self,
        node_redis: NodeRedis,
        visibility_timeout: float,
        announcements: Announcements | None = None,
    ) -> None:
        self.redis = node_redis
        self.visibility_timeout = visibility_timeout
        #: the calls taken and not announced yet: a hand-back drops theirs
        self.announcements = announcements or Announcements(node_redis.announce)
        self._lock = threading.Lock()
        self._held: dict[QueueKeys, set[bytes]] = {}
        #: the held entries of submit calls, by (queue, entry id): handing one back tells
        #: its producer (its future is pending again, and may be cancelled)
        self._calls: dict[tuple[QueueKeys, bytes], Delivery] = {}

    def hold(self, delivery: Delivery) -> None:
        with self._lock:
            self._held.setdefault(delivery.queue, set()).add(delivery.entry_id)
            if call_of(delivery) is not None:
                self._calls[delivery.queue, delivery.entry_id] = delivery

    def holds(self, delivery: Delivery) -> bool:
        with self._lock:
            return delivery.entry_id in self._held.get(delivery.queue, ())

    def forget(self, delivery: Delivery) -> None:
        with self._lock:
            self._held.get(delivery.queue, set()).discard(delivery.entry_id)
            self._calls.pop((delivery.queue, delivery.entry_id), None)

    def _unstart(self, held: dict[QueueKeys, list[Any]]) -> None:
        """Before handing entries back: tell the producers of the calls among
        them that they are not running (``h=`` events). Advisory: logged."""
        with self._lock:
            keys = [(queue, i) for queue, ids in held.items() for i in ids]
            calls = [self._calls[key] for key in keys if key in self._calls]
        if calls:
            try:
                self.announcements.handed_back(calls)
            except TRANSIENT as exc:
                log.warning("could not tell producers of calls handed back: %s", exc)

    def snapshot(self) -> dict[QueueKeys, list[Any]]:
        with self._lock:
            return {q: sorted(ids) for q, ids in self._held.items() if ids}

    def hand_back(self, held: dict[QueueKeys, list[Any]] | None = None) -> None:
        """Make batches (all held, unless given) reclaimable by others at once."""
        held = self.snapshot() if held is None else held
        idle_ms = int(self.visibility_timeout * 1000) * 2
        self._unstart(held)
        try:
            self.redis.hand_back(held, idle_ms)
            log.info("handed %d unfinished batches back", sum(map(len, held.values())))
        except TRANSIENT as exc:
            log.warning("could not hand batches back (others reclaim them later): %s", exc)

    def give_back(self, delivery: Delivery) -> None:
        """Hand back one batch this node will not run (it cannot import its
        function: ``worker.core.unrunnable``), restoring its delivery count: this
        delivery is not used up, so the batch is not dead-lettered for it."""
        batch = {delivery.queue: [delivery.entry_id]}
        self._unstart(batch)
        self.forget(delivery)
        idle_ms = int(self.visibility_timeout * 1000) * 2
        try:
            self.redis.hand_back(batch, idle_ms, deliveries=max(0, delivery.deliveries - 1))
        except TRANSIENT as exc:
            log.warning(
                "queue %s: could not hand entry %s back (others reclaim it after its lease): %s",
                delivery.queue.name, delivery.entry_id.decode(), exc,
            )  # fmt: skip
