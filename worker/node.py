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
                    +--------------+  the jobs of items waiting to retry still active?

All state lives in the main thread (``worker.scheduler`` keeps the books); the
other threads talk to it only through the ``events`` queue, so nothing needs a
lock but the snapshot of held entry ids that the heartbeat reads. The reader
reads only when the main thread asks: when fewer chunks wait locally than the
node has processes. So a node holds about one batch beyond what its processes
run, never hoarding work another node could start sooner, and the pool does not
drain at batch boundaries.

An item that raised and may be tried again waits out its backoff in the retry
heap (``worker.retries``), not in a pool process: the process goes on with its
chunk and then with other work. The loop wakes when the earliest retry is due
and sends the items due then back to the pool, ahead of new chunks. Their batch
stays held, its lease refreshed, until every item has its final outcome.

With ``--rq-queue``, RQ queues are a second source of batches (``worker.rq_source``,
its own reader and writer threads): its batches go through the same Scheduler
and pool, and leave the node through it instead of the taskfan writer.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import RedisClusterException

from taskfan.connection import RedisClient
from taskfan.errors import ConfigError, TaskfanError
from taskfan.keys import QueueKeys
from taskfan.logs import batch_extra
from taskfan.settings import Settings
from worker.child import ChunkResult, run_chunk
from worker.guard import Guard
from worker.io_threads import REDIS_ERRORS, Heartbeat, Reader, Writer
from worker.pool import Pool
from worker.redis_io import Completed, Delivery, NodeRedis, new_node_id
from worker.scheduler import Chunk, Scheduler, key
from worker.sizing import ChunkSizer
from worker.stats import NodeStats, NodeView

if TYPE_CHECKING:
    from worker.metrics import MetricsServer
    from worker.rq_source import RqSource

log = logging.getLogger(__name__)


class Node:
    def __init__(self, settings: Settings, client: RedisClient | None = None) -> None:
        if client is None:
            if settings.redis_url is None:
                raise TaskfanError("a worker node needs a Redis URL (--redis-url)")
            from taskfan.connection import connect

            client = connect(settings.redis_url, block_seconds=settings.block_seconds)
        self.settings = settings
        self.id = settings.node_name or new_node_id()
        self.redis = NodeRedis(client, settings.queues, self.id)
        sizer = ChunkSizer(settings.processes, settings.chunksize)
        self.guard = Guard.from_settings(settings)
        self.scheduler = Scheduler(
            settings.processes, sizer, settings.max_deliveries, guard=self.guard
        )
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.started_at = time.time()
        #: what the node has done, and is doing: the node record and the metrics read it
        self.stats = NodeStats()
        self.view = NodeView(
            self.id, settings, self.started_at, self.stats,
            batches=lambda: list(self.scheduler.batches.values()),
            pool_chunks=lambda: len(self.scheduler.in_pool),
            pool_restarts=lambda: self._pool.restarts if self._pool else 0,
            retrying=lambda: self.scheduler.retries.pending,
        )  # fmt: skip
        self._metrics: MetricsServer | None = None
        self._stop = threading.Event()
        self._cold = False
        self._reading = False
        self._last_read_empty = False
        self._writing = 0
        self._held_lock = threading.Lock()
        self._held: dict[QueueKeys, set[bytes]] = {}
        self._rq: RqSource | None = None
        if settings.rq_queues:
            from worker.rq_source import RqSource

            if not isinstance(client, redis.Redis):
                raise ConfigError(
                    "RQ queues (--rq-queue) need one Redis server or a Sentinel master: "
                    "RQ does not run on a Redis Cluster"
                )
            self._rq = RqSource(settings, client, self.id, self.events, sizer)
        if not settings.queues:
            self._last_read_empty = True  # an RQ-only node: no taskfan queue to read
        self._reader = Reader(self.redis, settings, self.events)
        self._writer = Writer(self.redis, self.events)
        self._heartbeat = Heartbeat(
            self.redis, settings.heartbeat_interval, self._held_snapshot, self.view.record,
            on_beat=self._on_beat,
        )  # fmt: skip
        self._pool: Pool | None = None
        #: the future of each chunk in the pool, and the pool generation it went to
        self._futures: dict[Chunk, tuple[Future[ChunkResult], int]] = {}
        self._last_cause = "cause unknown"
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
            self._stop_by = time.monotonic() + self.settings.grace_period
        self._stop.set()
        self.events.put(("stop",))
        # From a signal handler too: a short call on another connection.
        self._reader.stop_reading()
        if self._rq is not None:
            self._rq.stop_reading()

    def install_signal_handlers(self) -> None:
        """SIGTERM / SIGINT stop gracefully; a second one stops at once."""

        def handle(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if self._stop.is_set():
                log.warning("%s again: cold stop, handing unfinished batches back", name)
                self.stop(cold=True)
            else:
                log.info("%s: finishing the batches in flight, then stopping", name)
                self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run(self) -> int:
        """Serve until stopped (or, in burst mode, until the queues are empty)."""
        settings = self.settings
        if settings.metrics_port is not None:
            self._start_metrics()
        self.redis.prepare()
        if self._rq is not None:
            self._rq.prepare()
        self._pool = Pool(settings.processes, settings.start_method, list(settings.paths))
        log.info(
            "node %s: serving %s with %d processes (%s), chunksize %s",
            self.id,
            ",".join([*settings.queues, *(f"rq:{name}" for name in settings.rq_queues)]),
            settings.processes,
            settings.start_method,
            settings.chunksize or "auto",
        )
        log.info("node %s: %s", self.id, self.guard.describe())
        for warning in self.guard.warnings():
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
                self._ask_for_batches()
                with contextlib.suppress(queue.Empty):
                    self._handle(self.events.get(timeout=self._until_next_deadline()))
                if self._stop.is_set():
                    self._stopping()
                self._enforce_deadlines()
                self._submit()
        finally:
            self._shutdown()
        return 0

    def _finished(self) -> bool:
        idle = not self.scheduler.batches and not self._writing and not self._reading
        empty = self._last_read_empty
        if self._rq is not None:
            idle = idle and not self._rq.reading
            empty = empty and self._rq.last_read_empty
        if self._cold:
            return True
        if self._stop.is_set():
            return idle
        return self.settings.burst and idle and empty

    def _shutdown(self) -> None:
        self._reader.close()
        self._heartbeat.closed.set()
        self._writer.close()
        if self._cold and self._held_snapshot():
            self._hand_back()
        if self._rq is not None:
            self._rq.close(self._cold, self._rq_unfinished())
        if self._pool is not None:
            self._pool.shutdown(wait=not self._cold)
        for thread in self._threads:
            thread.join(timeout=self.settings.block_seconds + 5)
        late_rq = self._hand_back_late_reads()
        if self._rq is not None:
            self._rq.after_threads(late_rq)
        with contextlib.suppress(redis.RedisError, RedisClusterException):  # best effort
            self.redis.unpublish()
        if self._metrics is not None:
            self._metrics.close()
        log.info("node %s: stopped (%s)", self.id, self.view.summary())

    def _stopping(self) -> None:
        """While stopping: hand back the batches not started, and turn cold when
        the grace period is over."""
        unstarted = self.scheduler.take_unstarted()
        if self._rq is not None:
            rq = self._rq
            rq.hand_back([b.delivery for b in unstarted if rq.owns(b.delivery)])
            for batch in [b for b in unstarted if rq.owns(b.delivery)]:
                self._release(batch.delivery)
            unstarted = [b for b in unstarted if not rq.owns(b.delivery)]
        if self._stop_by is not None:
            # They cannot finish in the grace period: back now, not at its end.
            unstarted += self.scheduler.take_waiting(after=self._stop_by)
        if unstarted:
            self._hand_back({b.delivery.queue: [b.delivery.entry_id] for b in unstarted})
            for batch in unstarted:
                self._release(batch.delivery)
        if not self._cold and self._stop_by is not None and time.monotonic() >= self._stop_by:
            log.warning(
                "grace period of %ss over: handing %d unfinished batches back (%s)",
                self.settings.grace_period,
                len(self.scheduler.batches),
                ", ".join(
                    f"job {b.entry.job_id} batch {b.entry.field}"
                    for b in self.scheduler.batches.values()
                ),
            )
            self._cold = True

    def _hand_back_late_reads(self) -> list[Delivery]:
        """Batches a read delivered after the loop ended go straight back (RQ's
        batches: returned, for the RQ source to hand back)."""
        late: dict[QueueKeys, list[Any]] = {}
        late_rq: list[Delivery] = []
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            if event[0] == "read":
                for delivery in event[1]:
                    late.setdefault(delivery.queue, []).append(delivery.entry_id)
            elif event[0] == "rq-read":
                late_rq += [batch.delivery for batch in event[1]]
        if late:
            self._hand_back(late)
        return late_rq

    def _hand_back(self, held: dict[QueueKeys, list[Any]] | None = None) -> None:
        held = self._held_snapshot() if held is None else held
        idle_ms = int(self.settings.visibility_timeout * 1000) * 2
        try:
            self.redis.hand_back(held, idle_ms)
            log.info("handed %d unfinished batches back", sum(map(len, held.values())))
        except REDIS_ERRORS as exc:
            log.warning("could not hand batches back (others reclaim them later): %s", exc)

    # ----------------------------------------------------------------- event loop

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "read":
            self._reading = False
            self._last_read_empty = not event[1] and not self.scheduler.batches
            for delivery in event[1]:
                self._accept(delivery)
        elif kind == "done":
            self._chunk_done(event[1], event[2])
        elif kind == "written":
            self._writing -= 1
            self._release(event[1].delivery)
        elif kind == "ended":
            for completed in self.scheduler.ended(event[1]):
                self._complete(completed)
        elif kind == "rq-read":
            assert self._rq is not None
            for batch in self._rq.on_read(event, bool(self.scheduler.batches)):
                self._complete_maybe(self.scheduler.admit(batch))
        elif kind == "rq-written":
            assert self._rq is not None
            self._writing -= 1
            self._rq.count(self.stats, event)
            self._release(event[1])

    def _ask_for_batches(self) -> None:
        rq_reading = self._rq is None or self._rq.reading
        if (self._reading and rq_reading) or self._stop.is_set():
            return
        want = self.scheduler.batches_wanted()
        if not want:
            return
        if self._rq is not None:
            self._rq.request(want)  # no-op while its read is out
            if not self.settings.queues or self._reading:
                return
        self._reading = True
        self._reader.request(want)

    def _accept(self, delivery: Delivery) -> None:
        if delivery.fields is not None and not delivery.skip:
            self._hold(delivery)
        if delivery.deliveries > 1:  # new reads are first deliveries; these were reclaimed
            self.stats.reclaimed(delivery.queue.name)
        self._complete_maybe(self.scheduler.accept(delivery))

    def _submit(self) -> None:
        if self._cold or self._pool is None:
            return
        self.scheduler.retries_due(time.monotonic())
        while (chunk := self.scheduler.next_chunk()) is not None:
            entry = chunk.batch.entry
            rq = self._rq is not None and self._rq.owns(chunk.batch.delivery)
            # an RQ job's own function is checked against the allowlist (rq_adapter.run_job)
            allow = () if rq else self.settings.allow
            try:
                future = self._pool.submit(
                    run_chunk, entry.fn_ref, entry.codec, entry.mode.value, chunk.items(),
                    entry.options, allow, self.settings.max_item_bytes, chunk.lo, chunk.retrying,
                )  # fmt: skip
            except BrokenProcessPool:
                # The pool broke under chunks still in it; their callbacks rebuild it.
                self.scheduler.unsent(chunk)
                return
            self.scheduler.sent(chunk, time.monotonic())
            if rq:
                assert self._rq is not None
                self._rq.started(chunk.batch.delivery, chunk.lo, chunk.hi)
            self._futures[chunk] = (future, self._pool.generation)
            future.add_done_callback(self._on_done(chunk))

    def _on_done(self, chunk: Chunk) -> Any:
        """A pool callback (it runs in the pool's thread): hand the result to the loop."""
        return lambda future: self.events.put(("done", chunk, future))

    def _chunk_done(self, chunk: Chunk, future: Future[ChunkResult]) -> None:
        assert self._pool is not None
        current = self._futures.get(chunk)
        if current is None or current[0] is not future:
            return  # a stale future: the chunk was settled or sent again meanwhile
        del self._futures[chunk]
        try:
            result = future.result()
        except BrokenProcessPool:
            if current[1] == self._pool.generation:
                self._last_cause = self._pool.death_cause()
                log.warning(
                    "%s: a pool process died (%s); rebuilding the pool",
                    chunk.where(),
                    self._last_cause,
                    extra=_chunk_extra(chunk),
                )
                self._pool.rebuild()
            self._complete_maybe(self.scheduler.crashed(chunk, self._last_cause))
            return
        except Exception as exc:  # e.g. the items could not be pickled for the pool
            log.warning("%s: failed in the pool: %r", chunk.where(), exc, extra=_chunk_extra(chunk))
            self._complete_maybe(
                self.scheduler.error(
                    chunk, type(exc).__name__, f"the node could not run this item: {exc}"
                )
            )
            return
        entry = chunk.batch.entry
        self.stats.chunk(entry.fn_ref, chunk.size, result.seconds)
        if result.retries:
            self.stats.retried(chunk.batch.delivery.queue.name, entry.fn_ref, len(result.retries))
        self._complete_maybe(self.scheduler.done(chunk, result, time.monotonic()))

    def _until_next_deadline(self) -> float | None:
        scheduler = self.scheduler
        deadlines = [
            d
            for d in (scheduler.next_deadline(), scheduler.next_retry(), self._stop_by)
            if d is not None
        ]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _enforce_deadlines(self) -> None:
        expired = self.scheduler.expired(time.monotonic())
        if not expired or self._pool is None:
            return
        for chunk in expired:
            limit = chunk.batch.entry.options.hard_timeout
            message = f"the item ran past its hard timeout of {limit}s and its process was killed"
            log.warning("%s: %s", chunk.where(), message, extra=_chunk_extra(chunk))
            del self._futures[chunk]
            self._complete_maybe(self.scheduler.error(chunk, "HardTimeout", message))
        # Killing the pool fails every chunk in it; the others simply run again.
        self._pool.rebuild()
        for chunk in list(self.scheduler.in_pool):
            del self._futures[chunk]
            self.scheduler.requeue(chunk)

    def _complete_maybe(self, completed: Completed | None) -> None:
        if completed is not None:
            self._complete(completed)

    def _complete(self, completed: Completed) -> None:
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
            elapsed = time.monotonic() - batch.started if batch else 0.0
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
        with self._held_lock:
            self._held.get(delivery.queue, set()).discard(delivery.entry_id)
        self.scheduler.release(delivery)

    # ----------------------------------------------------------------- threads

    def _hold(self, delivery: Delivery) -> None:
        with self._held_lock:
            self._held.setdefault(delivery.queue, set()).add(delivery.entry_id)

    def _rq_unfinished(self) -> list[tuple[Delivery, dict[int, bytes]]]:
        """The RQ batches still held, with the results of their chunks so far."""
        assert self._rq is not None
        batches = self.scheduler.batches.values()
        return [(b.delivery, b.blobs) for b in batches if self._rq.owns(b.delivery)]

    def _held_snapshot(self) -> dict[QueueKeys, list[Any]]:
        with self._held_lock:
            return {q: sorted(ids) for q, ids in self._held.items() if ids}

    # ----------------------------------------------------------------- metrics

    def _start_metrics(self) -> None:
        from worker.metrics import MetricsServer

        settings = self.settings
        assert settings.metrics_port is not None
        self._metrics = MetricsServer(self.view, settings.metrics_host, settings.metrics_port)
        self.view.metrics_address = self._metrics.address
        log.info(
            "node %s: Prometheus metrics on http://%s/metrics", self.id, self.view.metrics_address
        )

    def _on_beat(self) -> None:
        """After each heartbeat (heartbeat thread): the metrics' queue depths, the
        jobs of items waiting to retry, and the RQ source's leases."""
        self._sample_queues()
        self._check_retrying_jobs()
        if self._rq is not None:
            self._rq.beat()

    def _check_retrying_jobs(self) -> None:
        """A job cancelled (or gone) while items of it wait to retry: tell the main
        thread, which drops them rather than hold the batch until they are due.
        One round trip per heartbeat, only while items wait."""
        jobs = sorted(self.scheduler.retries.jobs.copy())  # one C call: safe off the main thread
        if jobs:
            ended = self.redis.ended(jobs)
            if ended:
                self.events.put(("ended", ended))

    def _sample_queues(self) -> None:
        """Queue depths for the metrics, once per heartbeat (heartbeat thread)."""
        if self._metrics is not None:
            self.view.queues = self.redis.queue_depths()


def _chunk_extra(chunk: Chunk) -> dict[str, Any]:
    return batch_extra(chunk.batch.entry.job_id, chunk.batch.entry.field)
