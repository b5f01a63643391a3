"""The node's three I/O threads: reader, writer and heartbeat.

Each talks to Redis through ``NodeRedis`` and to the node's main thread only
through its ``events`` queue (``worker.node.messages``: ``Read(deliveries)``,
``Written(completed)``). None of them ever dies from an error: each logs it and tries
again with backoff, so a node rides out Redis restarts and dropped
connections, and the writer keeps finished results in memory meanwhile.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from taskfan import scripts
from taskfan.keys import QueueKeys
from taskfan.logs import batch_extra
from taskfan.settings import Settings
from taskfan.transient import TRANSIENT, Backoff
from worker.core.batches import Completed, Delivery
from worker.node.messages import Events, Read, Written
from worker.sources.streams.redis_io import NodeRedis

log = logging.getLogger(__name__)


class OnDemand:
    """A reader thread's side of the node's demand: the main thread calls
    ``request`` (thread-safe), the reader waits in ``next_demand``;
    ``stop_reading`` cuts a read under way short (``interrupt``) and ``close``
    ends the thread."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.stopping = threading.Event()
        self._demand = 0
        self._cond = threading.Condition()

    def request(self, batches: int) -> None:
        with self._cond:
            self._demand = batches
            self._cond.notify()

    def stop_reading(self) -> None:
        """Read no more (a read under way is cut short). Thread-safe."""
        self.stopping.set()
        with self._cond:
            self._cond.notify_all()
        self.interrupt()

    def interrupt(self) -> None:
        """End a blocking read under way (from another thread)."""

    def close(self) -> None:
        self.closed.set()
        with self._cond:
            self._cond.notify_all()

    def next_demand(self) -> int | None:
        """Wait until batches are asked for: how many, or None once closed."""
        with self._cond:
            while not self._demand and not self.closed.is_set():
                self._cond.wait()
            if self.closed.is_set():
                return None
            want, self._demand = self._demand, 0
            return want


class Reader(OnDemand):
    """Reads batches when asked (``request``), at most one read at a time."""

    def __init__(self, node_redis: NodeRedis, settings: Settings, events: Events) -> None:
        super().__init__()
        self.redis = node_redis
        self.settings = settings
        self.events = events

    def interrupt(self) -> None:
        self.redis.interrupt()

    def run(self) -> None:
        settings = self.settings
        block_ms = int(settings.block_seconds * 1000)
        min_idle_ms = int(settings.visibility_timeout * 1000)
        next_reclaim = 0.0
        backoff = Backoff()
        while (want := self.next_demand()) is not None:
            found: list[Delivery] = []
            try:
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + settings.heartbeat_interval
                    found = self.redis.reclaim(want, min_idle_ms)
                    if len(found) >= want:  # more may wait: check again at the next read
                        next_reclaim = 0.0
                    if found:  # each batch's own INFO line says it was reclaimed
                        log.debug("reclaimed %d batches whose lease lapsed", len(found))
                if not found and not self.stopping.is_set():
                    found = self.redis.read(want, block_ms)
                backoff.reset()
            except TRANSIENT as exc:
                if not self.stopping.is_set():
                    log.warning(
                        "reading from Redis failed, retrying in %.1fs: %s", backoff.delay, exc
                    )
                backoff.wait(self.closed)
            except Exception:  # never let the reader die: the node would hang
                log.exception("reading from Redis failed, retrying in %.1fs", backoff.delay)
                backoff.wait(self.closed)
            self.events.put(Read(found))


#: why record.lua refused a batch's results, by its answer
_DROPPED = {
    scripts.JOB_GONE: "the job no longer exists",
    scripts.JOB_CANCELLED: "the job was cancelled or abandoned",
    scripts.ROUND_VOID: "its retry round never opened (another round superseded it)",
}


class Writer:
    """Records finished batches, many per pipeline; retries until it can."""

    #: batches recorded in one pipeline, at most
    GROUP = 64

    def __init__(self, node_redis: NodeRedis, events: Events) -> None:
        self.redis = node_redis
        self.events = events
        self._queue: queue.Queue[Completed | None] = queue.Queue()

    def put(self, completed: Completed) -> None:
        self._queue.put(completed)

    def close(self) -> None:
        self._queue.put(None)

    def run(self) -> None:
        while (done := self._next_group()) is not None:
            self._write(done)
            for completed in done:
                why = _DROPPED.get(completed.code) if completed.code is not None else None
                if why is not None:
                    log.warning(
                        "job %s batch %s: %s; results dropped",
                        completed.job_id,
                        completed.field,
                        why,
                        extra=batch_extra(completed.job_id, completed.field),
                    )
                self.events.put(Written(completed))

    def _next_group(self) -> list[Completed] | None:
        first = self._queue.get()
        if first is None:
            return None
        done = [first]
        while len(done) < self.GROUP:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                self._queue.put(None)  # close after this group
                break
            done.append(more)
        return done

    def _write(self, done: list[Completed]) -> None:
        backoff = Backoff()
        never = threading.Event()
        while True:
            try:
                self.redis.write(done, time.time())
                return
            except TRANSIENT as exc:
                log.warning(
                    "recording %d batches (%s) failed (kept in memory), retrying in %.1fs: %s",
                    len(done),
                    _name_batches(done),
                    backoff.delay,
                    exc,
                )
            except Exception:  # e.g. OOM from Redis: keep the results, try again
                log.exception(
                    "recording %d batches (%s) failed (kept in memory), retrying in %.1fs",
                    len(done),
                    _name_batches(done),
                    backoff.delay,
                )
            backoff.wait(never)


class Heartbeat:
    """Every interval: renew the leases of held batches, publish the node record."""

    def __init__(
        self,
        node_redis: NodeRedis,
        interval: float,
        held: Callable[[], dict[QueueKeys, list[Any]]],
        record: Callable[[], dict[str, Any]],
        on_beat: Callable[[], None] | None = None,
    ) -> None:
        self.redis = node_redis
        self.interval = interval
        self.held = held
        self.record = record
        #: called after each beat (the metrics sample queue depths)
        self.on_beat = on_beat
        self.closed = threading.Event()

    def run(self) -> None:
        while True:
            try:
                held = self.held()
                if held:
                    self.redis.refresh(held)
                self.redis.publish(self.record(), ttl=self.interval * 3)
                if self.on_beat is not None:
                    self.on_beat()
            except TRANSIENT as exc:
                log.warning("heartbeat failed: %s", exc)
            except Exception:
                log.exception("heartbeat failed")
            if self.closed.wait(self.interval):
                return


def _name_batches(done: list[Completed], shown: int = 3) -> str:
    """``job J batch B, ...`` for a log line, the first few and how many more."""
    names = [f"job {c.job_id or '?'} batch {c.field or '?'}" for c in done[:shown]]
    more = len(done) - shown
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")
