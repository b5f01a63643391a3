"""The worker node: one process per machine that keeps a local process pool busy.

How batches move through a node::

                    +--------------+  demand   +----------------+  submit  +-----------+
  queue stream ---> | reader       | <-------- |  main thread:  | -------> |  process  |
  XREADGROUP,       | thread       | --read--> |  event loop +  |          |  pool     |
  XAUTOCLAIM        +--------------+           |  Scheduler     | <------- | run_chunk |
                                               |                |   done   +-----------+
                    +--------------+           | cuts batches   | (callback: outcomes,
  record.lua,  <--- | writer       | <-------- | into chunks,   |  and items to retry)
  XACK, XDEL        | thread       | written-> | keeps the pool |
  (pipelined)       +--------------+           | fed, joins     | retry  +-------------+
                                               | chunk results  | -----> | retry heap  |
                    +--------------+           |                | <----- | by due time |
                    | heartbeat    | --ended-> +----------------+  due   +-------------+
                    | thread       |  lease refresh (XCLAIM JUSTID), node record; are
                    +--------------+  the jobs of the batches held still active?

All state lives in the main thread; the other threads talk to it only through
the ``events`` queue (typed messages, one class per kind: ``worker.node.messages``),
so nothing needs a lock but the held entry ids that the heartbeat reads
(``worker.sources.streams.held_entries``). The main thread's parts: ``worker.core.scheduler``
keeps the books, ``worker.pool.pool_feed`` talks to the pool, ``worker.node.demand``
decides when to read, ``worker.node.stopping`` what a stopping node lets go of;
``worker.services.heartbeat_duties`` is what the heartbeat does besides leases and the node record.
The reader reads only when the main thread asks: when fewer chunks wait locally
than the node has processes. So a node holds about one batch beyond what its
processes run, never hoarding work another node could start sooner, and the
pool does not drain at batch boundaries.

An item that raised and may be tried again waits out its backoff in the retry
heap (``worker.core.retries``), not in a pool process: the process goes on with its
chunk and then with other work. The loop wakes when the earliest retry is due
and sends the items due then back to the pool, ahead of new chunks. Their batch
stays held, its lease refreshed, until every item has its final outcome.

With ``--rq-queue``, RQ queues are a second source of batches (``worker.sources.rq.rq_source``,
its own reader and writer threads): its batches go through the same Scheduler
and pool, and leave the node through it instead of the taskfan writer.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis
from redis.exceptions import RedisClusterException

from taskfan.bounds import MAX_LOOP_WAIT, capped
from taskfan.connection import RedisClient
from taskfan.errors import ConfigError, TaskfanError
from taskfan.logs import batch_extra
from taskfan.settings import Settings
from worker.core.batches import Completed, Delivery, key
from worker.core.chunk_sizing import ChunkSizer
from worker.core.entry_checks import Guard
from worker.core.scheduler import Scheduler
from worker.core.unrunnable import Unrunnable
from worker.node.demand import Demand
from worker.node.io_threads import Heartbeat, Reader, Writer
from worker.node.messages import (
    ChunkDone,
    Event,
    Events,
    JobsEnded,
    Read,
    RqRead,
    RqWritten,
    Stop,
    Written,
    new_events,
    unhandled,
)
from worker.node.stopping import (
    grace_over,
    hand_back_unfinishable,
    install_signal_handlers,
    rq_unfinished,
)
from worker.pool.pool_feed import PoolFeed
from worker.services.heartbeat_duties import BeatDuties
from worker.services.stats import NodeStats, NodeView
from worker.sources.streams.held_entries import HeldEntries
from worker.sources.streams.node_record import new_node_id
from worker.sources.streams.redis_io import NodeRedis

if TYPE_CHECKING:
    from worker.sources.rq.rq_source import RqSource

#: the name operators filter the node's log by (docs/operations.md), as before the
#: node moved into worker/node/
log = logging.getLogger("worker.node")


def connect_node_redis(settings: Settings, client: RedisClient | None = None) -> NodeRedis:
    """The node's Redis I/O for ``settings``: on ``client``, else on a connection
    to ``settings.redis_url``."""
    if client is None:
        if settings.redis_url is None:
            raise TaskfanError("a worker node needs a Redis URL (--redis-url)")
        from taskfan.connection import connect

        client = connect(settings.redis_url, block_seconds=settings.block_seconds)
    node_id = settings.node_name or new_node_id()
    return NodeRedis(client, settings.queues, node_id, recheck_recorded=bool(settings.secrets))


class Node:
    def __init__(
        self,
        settings: Settings,
        client: RedisClient | None = None,
        *,
        node_redis: NodeRedis | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A node for ``settings``. Every Redis command of its taskfan queues goes
        through ``node_redis``: given (a test passes a fake one and drives the node
        in-process, its pool real), or built here on ``client``, else on a
        connection to ``settings.redis_url``. ``clock`` (monotonic seconds) times
        its grace period, retries, deadlines and pauses."""
        self.settings = settings
        self.clock = clock
        if node_redis is None:
            node_redis = connect_node_redis(settings, client)
        client = node_redis.client
        self.id = node_redis.node_id
        self.redis = node_redis
        sizer = ChunkSizer(settings.processes, settings.chunksize)
        self.guard = Guard.from_settings(settings)
        #: functions this node cannot import or may not run: their batches go back
        self.unrunnable = Unrunnable(self.id)
        self.scheduler = Scheduler(
            settings.processes,
            sizer,
            settings.max_deliveries,
            clock=clock,
            guard=self.guard,
            unrunnable=self.unrunnable,
        )
        self.events: Events = new_events()
        self.started_at = time.time()
        #: what the node has done, and is doing: the node record and the metrics read it
        self.stats = NodeStats()
        self.view = NodeView(
            self.id, settings, self.started_at, self.stats,
            batches=lambda: list(self.scheduler.batches.values()),
            pool_chunks=lambda: len(self.scheduler.in_pool),
            pool_restarts=lambda: self._feed.restarts,
            retrying=lambda: self.scheduler.retries.pending,
            posture=self.guard.posture(),
            cannot_run=self.unrunnable.published,
        )  # fmt: skip
        self._stop = threading.Event()
        self._cold = False
        self._writing = 0
        #: the stream entries of the batches held: the heartbeat renews their leases
        self._held = HeldEntries(self.redis, settings.visibility_timeout)
        self._rq: RqSource | None = None
        if settings.rq_queues:
            from worker.sources.rq.rq_source import RqSource

            if not isinstance(client, redis.Redis):
                raise ConfigError(
                    "RQ queues (--rq-queue) need one Redis server or a Sentinel master: "
                    "RQ does not run on a Redis Cluster"
                )
            self._rq = RqSource(settings, client, self.id, self.events, sizer)
        self._reader = Reader(self.redis, settings, self.events)
        self._demand = Demand(settings, self.scheduler, self._reader, self._rq)
        self._writer = Writer(self.redis, self.events)
        self._beat = BeatDuties(
            self.id,
            settings,
            self.redis,
            self.view,
            self.scheduler.liveness,
            self.events,
            self._rq,
            self.unrunnable,
        )
        self._heartbeat = Heartbeat(
            self.redis, settings.heartbeat_interval, self._held.snapshot, self.view.record,
            on_beat=self._beat,
        )  # fmt: skip
        self._feed = PoolFeed(
            settings, self.scheduler, self.stats, self.events, self._rq, self._complete_maybe
        )
        self._threads: list[threading.Thread] = []
        #: when a graceful stop turns cold (monotonic seconds), once stopping
        self._stop_by: float | None = None

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
        # From a signal handler too: a short call on another connection.
        self._reader.stop_reading()
        if self._rq is not None:
            self._rq.stop_reading()

    def install_signal_handlers(self) -> None:
        """SIGTERM / SIGINT stop gracefully; a second one stops at once."""
        install_signal_handlers(self.stop, self._stop)

    def run(self) -> int:
        """Serve until stopped (or, in burst mode, until the queues are empty)."""
        settings = self.settings
        if settings.metrics_port is not None:
            self._beat.start_metrics()
        self.redis.prepare()
        if self._rq is not None:
            self._rq.prepare()
        self._feed.start()
        log.info(
            "node %s: serving %s with %d processes (%s), chunksize %s",
            self.id,
            ",".join([*settings.queues, *(f"rq:{name}" for name in settings.rq_queues)]),
            settings.processes,
            settings.start_method,
            settings.chunksize or "auto",
        )
        log.info("node %s: %s", self.id, self.guard.describe())
        for warning in self.guard.warnings(settings.redis_url):
            log.warning("node %s: %s", self.id, warning)
        threads = [
            ("reader", self._reader.run),
            ("writer", self._writer.run),
            ("heartbeat", self._heartbeat.run),
        ]
        if self._rq is not None:
            threads += self._rq.threads()
        for name, target in threads:
            thread = threading.Thread(target=target, name=f"taskfan-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
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
                        self._complete(completed)
                    self._feed.submit()
        finally:
            self._shutdown()
        return 0

    def _finished(self) -> bool:
        idle = not self.scheduler.batches and not self._writing and self._demand.idle()
        empty = self._demand.empty()
        if self._cold:
            return True
        if self._stop.is_set():
            return idle
        return self.settings.burst and idle and empty

    def _shutdown(self) -> None:
        self._reader.close()
        self._heartbeat.closed.set()
        self._writer.close()
        if self._cold and self._held.snapshot():
            self._held.hand_back()
        if self._rq is not None:
            self._rq.close(self._cold, rq_unfinished(self.scheduler, self._rq))
        self._feed.shutdown(wait=not self._cold)
        for thread in self._threads:
            thread.join(timeout=self.settings.block_seconds + 5)
        late_rq = self._held.hand_back_late_reads(self.events)
        if self._rq is not None:
            self._rq.after_threads(late_rq)
        with contextlib.suppress(redis.RedisError, RedisClusterException):  # best effort
            self.redis.unpublish()
        self._beat.close()
        log.info("node %s: stopped (%s)", self.id, self.view.summary())

    def _stopping(self) -> None:
        """While stopping: hand back the batches not started (or not finishable in
        the grace period), and turn cold when the grace period is over."""
        scheduler = self.scheduler
        hand_back_unfinishable(scheduler, self._held, self._rq, self._release, self._stop_by)
        if not self._cold and self._stop_by is not None:
            self._cold = grace_over(
                scheduler, self.settings.grace_period, self._stop_by, self.clock()
            )

    # ----------------------------------------------------------------- event loop

    def _handle(self, event: Event) -> None:
        match event:
            case Read(deliveries):
                self._demand.read(found=bool(deliveries))
                given_back = sum(self.stats.given_back.values())
                for delivery in deliveries:
                    self._accept(delivery)
                for_others = sum(self.stats.given_back.values()) - given_back
                if deliveries and for_others == len(deliveries):
                    self._demand.pause(self.clock())  # all of it is for other nodes
            case ChunkDone(chunk, future):
                self._feed.done(chunk, future)
            case Written(completed):
                self._writing -= 1
                self._release(completed.delivery)
            case JobsEnded(jobs):
                for completed in self.scheduler.ended(jobs):
                    self._complete(completed)
                self._feed.terminate()  # a hard cancel: kill what runs of those jobs
            case RqRead():
                assert self._rq is not None
                for batch in self._rq.on_read(event, bool(self.scheduler.batches)):
                    self._complete_maybe(self.scheduler.admit(batch))
            case RqWritten(delivery):
                assert self._rq is not None
                self._writing -= 1
                self._rq.count(self.stats, event)
                self._release(delivery)
            case Stop():
                pass  # it woke the loop, which sees the stop flag
            case _:
                unhandled(event)

    def _accept(self, delivery: Delivery) -> None:
        if self._held.holds(delivery):
            # Our own XAUTOCLAIM took back an entry we still run: its lease lapsed
            # (heartbeats stalled past the visibility timeout). The claim renewed
            # it; running it twice here would record it twice.
            batch = self.scheduler.batches.get(key(delivery))
            name = f"job {batch.entry.job_id} batch {batch.entry.index}" if batch else "batch"
            log.warning(
                "queue %s: %s (entry %s) was reclaimed by this node, which still holds it "
                "(its heartbeats stalled past the visibility timeout); not running it twice",
                delivery.queue.name, name, delivery.entry_id.decode(),
            )  # fmt: skip
            return
        if delivery.fields is not None and not delivery.skip:
            self._held.hold(delivery)
        if delivery.skip:
            self.stats.skip(delivery.queue.name)
        if delivery.deliveries > 1:  # new reads are first deliveries; these were reclaimed
            self.stats.reclaimed(delivery.queue.name)
        self._complete_maybe(self.scheduler.accept(delivery))

    def _until_next_deadline(self) -> float | None:
        scheduler = self.scheduler
        deadlines = [
            d
            for d in (
                scheduler.next_deadline(),
                scheduler.next_retry(),
                self._stop_by,
                self._demand.paused_until,
                self._feed.retry_at,
            )
            if d is not None
        ]
        if not deadlines:
            return None  # an event wakes it
        # Capped (taskfan.bounds): no deadline a value made can overflow the wait.
        return capped(min(deadlines) - self.clock(), MAX_LOOP_WAIT)

    def _complete_maybe(self, completed: Completed | None) -> None:
        if completed is not None:
            self._complete(completed)

    def _complete(self, completed: Completed) -> None:
        if completed.give_back:
            # Another node may run it (worker.core.unrunnable): back now, its delivery undone.
            self._held.give_back(completed.delivery)
            self.stats.gave_back(completed.delivery.queue.name)
            return
        if self._rq is not None and self._rq.owns(completed.delivery):
            batch = self.scheduler.batches.get(key(completed.delivery))
            self._writing += 1
            self._rq.complete(completed.delivery, batch.blobs if batch else {})  # then "rq-written"
            return
        self._writing += 1
        self._writer.put(completed)
        self.stats.completed(completed)
        if completed.job_id:
            delivery = completed.delivery
            batch = self.scheduler.batches.get(key(delivery))
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

    def _release(self, delivery: Delivery) -> None:
        """A batch is recorded and acknowledged, or handed back: forget it."""
        self._held.forget(delivery)
        self.scheduler.release(delivery)
