"""The worker node: one process per machine that keeps a local process pool busy.

How batches move through a node::

                    +--------------+  demand   +----------------+  submit  +-----------+
  each source   --> | its reader   | <-------- |  main thread:  | -------> |  process  |
  (queue streams:   | thread       | --Read--> |  event loop +  |          |  pool     |
  XREADGROUP,       +--------------+           |  Scheduler     | <------- | run_chunk |
  XAUTOCLAIM)                                  |                |   done   +-----------+
                    +--------------+           | cuts batches   | (callback: outcomes,
  its records  <--- | its writer   | <-------- | into chunks,   |  and items to retry)
  (record.lua,      | thread       | Written-> | keeps the pool |
  XACK, XDEL)       +--------------+           | fed, joins     | retry  +-------------+
                                               | chunk results  | -----> | retry heap  |
                    +--------------+           |                | <----- | by due time |
                    | heartbeat    | --ended-> +----------------+  due   +-------------+
                    | thread       |  each source's leases, node record; are the
                    +--------------+  jobs of the batches held still active?

A node reads from one or more sources (``worker.sources.base.Source``: the
queue streams with ``--queue``, others as plug-ins, ``worker.sources.registry``)
and knows none of them: it asks each for batches, hands each batch back to the
source that owns it to record or to take back, and lets the heartbeat renew
each source's leases. All of them feed the same Scheduler and pool.

All state lives in the main thread; the other threads talk to it only through
the ``events`` queue (typed messages, one class per kind: ``worker.node.messages``),
so nothing needs a lock but what a source shares with its own threads. The main
thread's parts: ``worker.core.scheduler`` keeps the books,
``worker.pool.pool_feed`` talks to the pool, ``worker.node.demand`` decides when
to read, ``worker.node.stopping`` what a stopping node lets go of;
``worker.services.heartbeat_duties`` is what the heartbeat does besides leases
and the node record. A source reads only when the main thread asks: when fewer
chunks wait locally than the node has processes. So a node holds about one batch
beyond what its processes run, never hoarding work another node could start
sooner, and the pool does not drain at batch boundaries.

An item that raised and may be tried again waits out its backoff in the retry
heap (``worker.core.retries``), not in a pool process: the process goes on with its
chunk and then with other work. The loop wakes when the earliest retry is due
and sends the items due then back to the pool, ahead of new chunks. Their batch
stays held, its lease refreshed, until every item has its final outcome.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

import redis
from redis.exceptions import RedisClusterException

from taskfan.bounds import MAX_LOOP_WAIT, capped
from taskfan.connection import RedisClient
from taskfan.settings import Settings
from worker.core.batches import Batch, Delivery
from worker.node.messages import (
    ChunkDone,
    Event,
    Events,
    JobsEnded,
    Read,
    Stop,
    Written,
    unhandled,
)
from worker.node.stopping import (
    SignalWaker,
    grace_over,
    hand_back_unfinishable,
    install_signal_handlers,
    late_reads,
)
from worker.node.wiring import NodeWiring, connect_node_redis, wire
from worker.sources.base import NodeParts, Source
from worker.sources.registry import build_sources
from worker.sources.streams.redis_io import NodeRedis

#: the name operators filter the node's log by (docs/operations.md), as before the
#: node moved into worker/node/
log = logging.getLogger("worker.node")


class Node:
    def __init__(
        self,
        settings: Settings,
        client: RedisClient | None = None,
        *,
        node_redis: NodeRedis | None = None,
        clock: Callable[[], float] = time.monotonic,
        sources: Callable[[NodeParts], Sequence[Source]] = build_sources,
        wiring: NodeWiring | None = None,
    ) -> None:
        """A node for ``settings``, run by the collaborators of ``wiring``
        (``worker.node.wiring``); without it, ``wire`` builds them here from the
        other arguments. Every Redis command of its taskfan queues and its node
        record goes through ``node_redis``: given (a test passes a fake one and
        drives the node in-process, its pool real), or built on ``client``, else
        on a connection to ``settings.redis_url``. ``clock`` (monotonic seconds)
        times its grace period, retries, deadlines and pauses. ``sources`` builds
        the sources it reads from (by default, every plug-in of
        ``worker.sources`` the settings ask for)."""
        if wiring is None:
            if node_redis is None:
                node_redis = connect_node_redis(settings, client)
            wiring = wire(settings, node_redis, clock=clock, sources=sources)
        self.settings = wiring.settings
        self.clock = wiring.clock
        self.id = wiring.node_id
        self.redis = wiring.node_redis
        self.guard = wiring.guard
        self.unrunnable = wiring.unrunnable
        self.scheduler = wiring.scheduler
        self.events: Events = wiring.events
        self.stats = wiring.stats
        self.view = wiring.view
        self.sources = list(wiring.sources)
        self._outbox = wiring.outbox
        self._feed = wiring.feed
        self._demand = wiring.demand
        self._beat = wiring.beat
        self._heartbeat = wiring.heartbeat
        self._stop = threading.Event()
        self._cold = False
        self._threads: list[threading.Thread] = []
        #: when a graceful stop turns cold (monotonic seconds), once stopping
        self._stop_by: float | None = None
        #: wakes the loop when a signal arrives (``install_signal_handlers``)
        self._waker: SignalWaker | None = None

    # ----------------------------------------------------------------- lifecycle

    def stop(self, cold: bool = False) -> None:
        """Stop reading; finish and record what is in flight (thread-safe).

        Batches not started yet go back to the queue at once, and so do those
        that only wait for retries due after the grace period; what is still
        unfinished when it ends goes back too (a cold stop).
        """
        self._cold = self._cold or cold
        if self._stop_by is None:
            self._stop_by = self.clock() + self.settings.grace_period
        self._stop.set()
        self.events.put(Stop())
        # From a signal handler too: each a short call on another connection.
        for source in self.sources:
            source.stop_reading()

    def install_signal_handlers(self) -> None:
        """SIGTERM / SIGINT stop gracefully; a second one stops at once. Each
        wakes the node's loop at once (``SignalWaker``), until the node stops."""
        install_signal_handlers(self.stop, self._stop)
        if self._waker is None:
            self._waker = SignalWaker(lambda: self.events.put(Stop()))

    def run(self) -> int:
        """Serve until stopped (or, in burst mode, until the queues are empty)."""
        settings = self.settings
        if settings.metrics_port is not None:
            self._beat.start_metrics()
        self.redis.prepare()
        for source in self.sources:
            source.prepare()
        self._feed.start()
        log.info(
            "node %s: serving %s with %d processes (%s), chunksize %s",
            self.id,
            ",".join(label for source in self.sources for label in source.labels()),
            settings.processes,
            settings.start_method,
            settings.chunksize or "auto",
        )
        log.info("node %s: %s", self.id, self.guard.describe())
        for warning in self.guard.warnings(settings.redis_url):
            log.warning("node %s: %s", self.id, warning)
        threads = [thread for source in self.sources for thread in source.threads()]
        threads.append(("heartbeat", self._heartbeat.run))
        for name, target in threads:
            thread = threading.Thread(target=target, name=f"taskfan-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        # Objects alive now live as long as the node: out of every collection
        # while it runs (worker.pool.child.freeze_start_up says why), and given
        # back when it stops, for a program that ran the node in its own process.
        gc.collect()
        gc.freeze()
        try:
            while not self._finished():
                self._demand.ask(stopping=self._stop.is_set(), now=self.clock())
                with contextlib.suppress(queue.Empty):
                    self._handle(self.events.get(timeout=self._until_next_deadline()))
                if self._stop.is_set():
                    self._stopping()
                self._feed.enforce_deadlines()
                if not self._cold:
                    for completed in self.scheduler.unpark():  # room in the decoded budget
                        self._outbox.complete(completed)
                    self._feed.submit()
        finally:
            try:
                self._shutdown()
            finally:
                gc.unfreeze()
        return 0

    def _finished(self) -> bool:
        idle = not self.scheduler.batches and not self._outbox.writing and self._demand.idle()
        empty = self._demand.empty()
        if self._cold:
            return True
        if self._stop.is_set():
            return idle
        return self.settings.burst and idle and empty

    def _shutdown(self) -> None:
        self._heartbeat.closed.set()
        for source in self.sources:
            held = [b for b in self.scheduler.batches.values() if source.owns(b.delivery)]
            source.close(self._cold, held)
        self._feed.shutdown(wait=not self._cold)
        for thread in self._threads:
            thread.join(timeout=self.settings.block_seconds + 5)
        late = late_reads(self.events)
        for source in self.sources:
            source.after_threads(late.get(source, []))
        with contextlib.suppress(redis.RedisError, RedisClusterException):  # best effort
            self.redis.unpublish()
        self._beat.close()
        if self._waker is not None:
            self._waker.close()
            self._waker = None
        log.info("node %s: stopped (%s)", self.id, self.view.summary())

    def _stopping(self) -> None:
        """While stopping: hand back the batches not started (or not finishable in
        the grace period), and turn cold when the grace period is over."""
        scheduler = self.scheduler
        hand_back_unfinishable(scheduler, self._outbox.owner, scheduler.release, self._stop_by)
        if not self._cold and self._stop_by is not None:
            self._cold = grace_over(
                scheduler, self.settings.grace_period, self._stop_by, self.clock()
            )

    # ----------------------------------------------------------------- event loop

    def _handle(self, event: Event) -> None:
        match event:
            case Read(source, entries, batches, found):
                self._read(source, entries, batches, found)
            case ChunkDone(chunk, future):
                self._feed.done(chunk, future)
            case Written(source, completed):
                self._outbox.written(source, completed)
            case JobsEnded(jobs):
                for completed in self.scheduler.ended(jobs):
                    self._outbox.complete(completed)
                self._feed.terminate()  # a hard cancel: kill what runs of those jobs
            case Stop():
                pass  # it woke the loop, which sees the stop flag
            case _:
                unhandled(event)

    def _read(
        self, source: Source, entries: Sequence[Delivery], batches: Sequence[Batch], found: bool
    ) -> None:
        """A source's read came back: its entries go through the intake, its
        batches straight to the scheduler."""
        self._demand.read(source, found)
        given_back = sum(self.stats.given_back.values())
        for delivery in source.arrived(entries):
            if delivery.skip:
                self.stats.skip(delivery.queue.name)
            if delivery.deliveries > 1:  # new reads are first deliveries; these were reclaimed
                self.stats.reclaimed(delivery.queue.name)
            self._outbox.complete_maybe(self.scheduler.accept(delivery))
        for batch in batches:
            self._outbox.complete_maybe(self.scheduler.admit(batch))
        for_others = sum(self.stats.given_back.values()) - given_back
        if entries and for_others == len(entries):
            self._demand.pause(source, self.clock())  # all of it is for other nodes

    def _until_next_deadline(self) -> float | None:
        scheduler = self.scheduler
        deadlines = [
            d
            for d in (
                scheduler.next_deadline(),
                scheduler.next_retry(),
                self._stop_by,
                self._demand.paused_until,
                self._feed.next_deadline(),
            )
            if d is not None
        ]
        if not deadlines:
            return None  # an event wakes it
        # Capped (taskfan.bounds): no deadline a value made can overflow the wait.
        return capped(min(deadlines) - self.clock(), MAX_LOOP_WAIT)
