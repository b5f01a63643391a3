"""The node's heartbeat thread: leases, the node record, and the other duties.

Every interval it asks each source to renew the leases of what it holds
(``Source.beat``), publishes the node record, then runs the node's other
duties (``worker.services.heartbeat_duties``). It never dies from an error: it
logs it and beats again at the next interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from taskfan.transient import TRANSIENT
from worker.sources.streams.redis_io import NodeRedis

log = logging.getLogger(__name__)


class Heartbeat:
    """Every interval: the sources renew their leases, the node record is published."""

    def __init__(
        self,
        node_redis: NodeRedis,
        interval: float,
        leases: Sequence[Callable[[], None]],
        record: Callable[[], dict[str, Any]],
        on_beat: Callable[[], None] | None = None,
    ) -> None:
        self.redis = node_redis
        self.interval = interval
        #: each source's lease renewal (``Source.beat``)
        self.leases = list(leases)
        self.record = record
        #: called after each beat (the metrics sample queue depths, ...)
        self.on_beat = on_beat
        self.closed = threading.Event()

    def run(self) -> None:
        while True:
            try:
                for renew in self.leases:
                    renew()
                self.redis.publish(self.record(), ttl=self.interval * 3)
                if self.on_beat is not None:
                    self.on_beat()
            except TRANSIENT as exc:
                log.warning("heartbeat failed: %s", exc)
            except Exception:
                log.exception("heartbeat failed")
            if self.closed.wait(self.interval):
                return
