"""The queue streams' two threads: the reader and the writer.

Each talks to Redis through ``NodeRedis`` and to the node's main thread only
through its ``events`` queue (``worker.node.messages``: ``Read(source, entries)``,
``Written(source, completed)``). Neither ever dies from an error: each logs it and
tries again with backoff, so a node rides out Redis restarts and dropped
connections, and the writer keeps finished results in memory meanwhile.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from taskfan import scripts
from taskfan.logs import batch_extra
from taskfan.settings import Settings
from taskfan.transient import TRANSIENT, Backoff
from worker.core.batches import Completed, Delivery
from worker.node.messages import Events, Read, Written
from worker.sources.on_demand import OnDemand
from worker.sources.streams.announcements import Announcements
from worker.sources.streams.redis_io import NodeRedis

if TYPE_CHECKING:
    from worker.sources.base import Source

log = logging.getLogger(__name__)


class Reader(OnDemand):
    """Reads batches when asked (``request``), at most one read at a time."""

    def __init__(
        self,
        node_redis: NodeRedis,
        settings: Settings,
        events: Events,
        source: Source,
        taken: Callable[[list[Delivery]], None],
    ) -> None:
        super().__init__()
        self.source = source
        self.redis = node_redis
        self.settings = settings
        self.events = events
        #: told what each read brought, once handed on: their calls are
        #: announced in a moment (``announcements``)
        self.taken = taken

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
            self.events.put(Read(self.source, entries=found, found=bool(found)))
            if found:
                self.taken(found)


#: why record.lua refused a batch's results, by its answer
_DROPPED = {
    scripts.JOB_GONE: "the job no longer exists",
    scripts.JOB_CANCELLED: "the job was cancelled or abandoned",
    scripts.ROUND_VOID: "its retry round never opened (another round superseded it)",
}


#: put in the writer's queue to wake it: an announcement to time
_WAKE = object()


class Writer:
    """Records finished batches, many per pipeline; retries until it can. Sends
    the announcements of calls that ran a moment unrecorded (``announcements``),
    and drops those of the batches it records."""

    #: batches recorded in one pipeline, at most
    GROUP = 64

    def __init__(
        self,
        node_redis: NodeRedis,
        events: Events,
        source: Source,
        announcements: Announcements,
    ) -> None:
        self.source = source
        self.redis = node_redis
        self.events = events
        self.announcements = announcements
        self._queue: queue.Queue[Completed | object | None] = queue.Queue()

    def put(self, completed: Completed) -> None:
        self._queue.put(completed)

    def wake(self) -> None:
        """An announcement was added while the writer slept: time it."""
        self._queue.put(_WAKE)

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
                self.events.put(Written(self.source, completed))

    def _next_group(self) -> list[Completed] | None:
        first = self._next()
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
            if isinstance(more, Completed):
                done.append(more)
        self.announcements.drop(c.delivery for c in done)  # their record says it
        return done

    def _next(self) -> Completed | None:
        """The next batch to record (None: closed), sending announcements as
        they fall due meanwhile."""
        while True:
            self._send_due()
            try:
                item = self._queue.get(timeout=self.announcements.wait())
            except queue.Empty:
                continue
            if item is None or isinstance(item, Completed):
                return item

    def _send_due(self) -> None:
        try:
            self.announcements.send_due()
        except TRANSIENT as exc:  # advisory: the batch runs, its record settles it
            log.warning("could not tell producers their calls started: %s", exc)
        except Exception:  # never let the writer die: results would wait in memory
            log.exception("could not tell producers their calls started")

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


def _name_batches(done: list[Completed], shown: int = 3) -> str:
    """``job J batch B, ...`` for a log line, the first few and how many more."""
    names = [f"job {c.job_id or '?'} batch {c.field or '?'}" for c in done[:shown]]
    more = len(done) - shown
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")
