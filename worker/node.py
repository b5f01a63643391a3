"""The worker node: one process per machine that keeps a local process pool busy.

How batches move through a node::

                    +--------------+  demand   +----------------+  submit  +-----------+
  queue stream ---> | reader       | <-------- |  main thread:  | -------> |  process  |
  XREADGROUP,       | thread       | --read--> |  scheduler     |          |  pool     |
  XAUTOCLAIM        +--------------+           |                | <------- | run_chunk |
                                               | cuts batches   |   done   +-----------+
                    +--------------+           | into chunks,   | (callback)
  record.lua,  <--- | writer       | <-------- | keeps the pool |
  XACK, XDEL        | thread       | written-> | fed, joins     |
  (pipelined)       +--------------+           | chunk results  |
                    +--------------+           +----------------+
                    | heartbeat    |  lease refresh (XCLAIM JUSTID), node record
                    +--------------+

All state lives in the main thread; other threads talk to it only through the
``events`` queue, so nothing else needs a lock except the in-flight id snapshot
the heartbeat reads. The reader reads only when the scheduler asks: when fewer
than one round of chunks waits locally, so the node holds at most about one
batch beyond what its processes are running and never hoards work that another
node could start sooner, yet the pool never drains at a batch boundary.

A child that dies (segfault, os._exit, OOM kill) breaks the pool: the node
builds a new one and reruns the chunks that were in it one at a time; a chunk
that breaks the pool again is cut in halves until the item that kills its
process stands alone, and that item is recorded as failed with the cause.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import redis

from taskfan import scripts
from taskfan.codec import get_codec
from taskfan.errors import ProtocolError, TaskfanError
from taskfan.keys import QueueKeys
from taskfan.protocol import BatchEntry, encode_result
from taskfan.settings import Settings
from worker.child import ChunkResult, init_child, run_chunk
from worker.redis_io import Completed, Delivery, NodeRedis, new_node_id
from worker.sizing import ChunkSizer

log = logging.getLogger(__name__)

#: errors after which a thread backs off and tries again instead of dying
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError)


@dataclass(eq=False)
class Batch:
    """A batch this node holds: its entry, its items and the chunks' results so far."""

    delivery: Delivery
    entry: BatchEntry
    items: list[Any]
    started: float
    blobs: dict[int, bytes] = field(default_factory=dict)  #: chunk start offset -> blob
    failed: int = 0
    remaining: int = 0


@dataclass(eq=False)
class Chunk:
    batch: Batch
    lo: int
    hi: int
    suspect: bool = False  #: was in a pool that broke; runs alone until cleared
    generation: int = 0  #: which pool it was submitted to


class Node:
    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        if client is None:
            if settings.redis_url is None:
                raise TaskfanError("a worker node needs a Redis URL (--redis-url)")
            from taskfan.connection import connect

            client = connect(settings.redis_url, block_seconds=settings.block_seconds)
        self.settings = settings
        self.id = settings.node_name or new_node_id()
        self.redis = NodeRedis(client, settings.queues, self.id)
        self.sizer = ChunkSizer(settings.processes, settings.chunksize)
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.started_at = time.time()
        self.counters = {"items_done": 0, "items_failed": 0, "batches_done": 0, "pool_restarts": 0}
        self._stop = threading.Event()
        self._cold = False
        self._closed = threading.Event()
        self._batches: dict[tuple[str, bytes], Batch] = {}
        self._pending: deque[Chunk] = deque()
        self._suspects: deque[Chunk] = deque()
        self._in_pool = 0
        self._generation = 0
        self._reading = False
        self._last_read_empty = False
        self._writing = 0
        self._demand = 0
        self._demand_cond = threading.Condition()
        self._held_lock = threading.Lock()
        self._held: dict[QueueKeys, set[bytes]] = {}
        self._write_queue: queue.Queue[Completed | None] = queue.Queue()
        self._pool: ProcessPoolExecutor | None = None
        self._last_cause = "cause unknown"
        self._threads: list[threading.Thread] = []

    # ----------------------------------------------------------------- lifecycle

    def stop(self, cold: bool = False) -> None:
        """Stop reading; finish and record what is in flight (thread-safe)."""
        self._cold = self._cold or cold
        self._stop.set()
        self.events.put(("stop",))
        with self._demand_cond:
            self._demand_cond.notify_all()

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
        self.redis.prepare()
        self._pool = self._new_pool()
        log.info(
            "node %s: serving %s with %d processes (%s), chunksize %s",
            self.id,
            ",".join(self.settings.queues),
            self.settings.processes,
            self.settings.start_method,
            self.settings.chunksize or "auto",
        )
        for target in (self._reader_loop, self._writer_loop, self._heartbeat_loop):
            thread = threading.Thread(target=target, name=target.__name__, daemon=True)
            thread.start()
            self._threads.append(thread)
        try:
            while not self._finished():
                self._ask_for_batches()
                self._handle(self.events.get())
                self._submit()
        finally:
            self._shutdown()
        return 0

    def _finished(self) -> bool:
        idle = not self._batches and not self._writing and not self._reading
        if self._cold:
            return True
        if self._stop.is_set():
            return idle
        return self.settings.burst and idle and self._last_read_empty

    def _shutdown(self) -> None:
        self._closed.set()
        with self._demand_cond:
            self._demand_cond.notify_all()
        self._write_queue.put(None)
        if self._cold and self._batches:
            self._hand_back()
        if self._pool is not None:
            self._pool.shutdown(wait=not self._cold, cancel_futures=True)
            if self._cold:
                self._kill_pool(self._pool)
        for thread in self._threads:
            thread.join(timeout=self.settings.block_seconds + 5)
        with contextlib.suppress(*REDIS_ERRORS):
            self.redis.unpublish(holds_nothing=not self._held_snapshot())
        log.info("node %s: stopped (%s)", self.id, _format_counters(self.counters))

    def _hand_back(self) -> None:
        held = self._held_snapshot()
        idle_ms = int(self.settings.visibility_timeout * 1000) * 2
        try:
            self.redis.hand_back(held, idle_ms)
            log.info("handed %d unfinished batches back", sum(map(len, held.values())))
        except REDIS_ERRORS as exc:
            log.warning("could not hand batches back (others reclaim them later): %s", exc)

    # ----------------------------------------------------------------- scheduler

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "read":
            self._reading = False
            self._last_read_empty = not event[1] and not self._batches
            for delivery in event[1]:
                self._accept(delivery)
        elif kind == "done":
            self._chunk_done(event[1], event[2])
        elif kind == "written":
            self._writing -= 1
            self._release(event[1])

    def _ask_for_batches(self) -> None:
        if self._reading or self._stop.is_set():
            return
        processes = self.settings.processes
        backlog = len(self._pending)
        if backlog + len(self._suspects) >= processes:
            return
        want = max(1, 2 * processes - self._in_pool - backlog)
        self._reading = True
        with self._demand_cond:
            self._demand = want
            self._demand_cond.notify()

    def _accept(self, delivery: Delivery) -> None:
        """Take a delivered entry: parse it, decode its items, cut it into chunks."""
        where = f"queue {delivery.queue.name} entry {delivery.entry_id.decode()}"
        if delivery.fields is None or delivery.skip:  # nothing to run: just acknowledge
            if delivery.skip:
                log.info("%s: skipped: %s", where, delivery.skip)
            self._complete(Completed(delivery, "", 0, b"", 0, 0))
            return
        try:
            entry = BatchEntry.parse(delivery.fields, where)
        except ProtocolError as exc:
            log.warning("%s: dead-lettered: %s", where, exc)
            self._complete(Completed(delivery, "", 0, b"", 0, 0, dead_reason=str(exc)))
            return
        self._hold(delivery)
        batch = Batch(delivery, entry, [], time.monotonic(), remaining=entry.count)
        self._batches[_key(delivery)] = batch
        try:
            items = get_codec(entry.codec).loads(entry.payload)
            if not isinstance(items, list) or len(items) != entry.count:
                raise ProtocolError(
                    f"payload holds {_describe(items)}, expected {entry.count} items"
                )
        except Exception as exc:  # a bad payload fails its items, never the node
            reason = f"job {entry.job_id} batch {entry.index}: cannot decode the batch: {exc}"
            log.warning("%s: dead-lettered: %s", where, reason)
            self._fail_batch(batch, "BadBatch", reason, dead=True)
            return
        batch.items = items
        size = self.sizer.chunksize(entry.fn_ref, entry.count, entry.chunksize)
        for lo in range(0, entry.count, size):
            self._pending.append(Chunk(batch, lo, min(lo + size, entry.count)))
        if entry.count == 0:
            self._finish_batch(batch)

    def _submit(self) -> None:
        assert self._pool is not None
        if self._cold:
            return
        if self._suspects:
            if self._in_pool == 0:
                self._send(self._suspects.popleft())
            return
        while self._pending and self._in_pool < 2 * self.settings.processes:
            if not self._send(self._pending.popleft()):
                return

    def _send(self, chunk: Chunk) -> bool:
        assert self._pool is not None
        entry = chunk.batch.entry
        items = chunk.batch.items[chunk.lo : chunk.hi]
        chunk.generation = self._generation
        try:
            future = self._pool.submit(
                run_chunk, entry.fn_ref, entry.codec, entry.mode.value, items
            )
        except BrokenProcessPool:
            # The pool broke under chunks still in it; their callbacks rebuild it.
            (self._suspects if chunk.suspect else self._pending).appendleft(chunk)
            return False
        self._in_pool += 1
        future.add_done_callback(lambda f: self.events.put(("done", chunk, f)))
        return True

    def _chunk_done(self, chunk: Chunk, future: Future[ChunkResult]) -> None:
        self._in_pool -= 1
        batch = chunk.batch
        try:
            result = future.result()
        except BrokenProcessPool:
            self._pool_broke(chunk)
            return
        except Exception as exc:  # e.g. the items could not be pickled for the pool
            log.warning(
                "job %s batch %d: chunk %d-%d failed in the pool: %r",
                batch.entry.job_id,
                batch.entry.index,
                chunk.lo,
                chunk.hi,
                exc,
            )
            self._store(
                chunk,
                self._error_blob(
                    batch,
                    chunk.hi - chunk.lo,
                    type(exc).__name__,
                    f"the node could not run this item: {exc}",
                ),
                chunk.hi - chunk.lo,
            )
            return
        self.sizer.observe(batch.entry.fn_ref, chunk.hi - chunk.lo, result.seconds)
        self._store(chunk, result.blob, result.failed)

    def _store(self, chunk: Chunk, blob: bytes, failed: int) -> None:
        batch = chunk.batch
        batch.blobs[chunk.lo] = blob
        batch.failed += failed
        batch.remaining -= chunk.hi - chunk.lo
        if batch.remaining == 0:
            self._finish_batch(batch)

    def _finish_batch(self, batch: Batch, dead_reason: str | None = None) -> None:
        entry = batch.entry
        blobs = [batch.blobs[lo] for lo in sorted(batch.blobs)]
        result = encode_result(entry.start, entry.count, batch.failed, blobs)
        ok = entry.count - batch.failed
        self._complete(
            Completed(
                batch.delivery, entry.job_id, entry.index, result, ok, batch.failed, dead_reason
            )
        )
        self.counters["items_done"] += ok
        self.counters["items_failed"] += batch.failed
        self.counters["batches_done"] += 1
        elapsed = time.monotonic() - batch.started
        log.info(
            "job %s batch %d: %d items, %d failed, %.3fs",
            entry.job_id,
            entry.index,
            entry.count,
            batch.failed,
            elapsed,
        )

    def _fail_batch(self, batch: Batch, type_name: str, message: str, dead: bool) -> None:
        count = batch.entry.count
        batch.blobs = {0: self._error_blob(batch, count, type_name, message)}
        batch.failed = count
        batch.remaining = 0
        self._finish_batch(batch, dead_reason=message if dead else None)

    def _error_blob(self, batch: Batch, count: int, type_name: str, message: str) -> bytes:
        errors = [[i, type_name, message, "", None] for i in range(count)]
        try:
            codec = get_codec(batch.entry.codec)
        except TaskfanError:
            codec = get_codec("json")
        return codec.dumps([[None] * count, errors])

    def _complete(self, completed: Completed) -> None:
        self._writing += 1
        self._write_queue.put(completed)

    def _release(self, completed: Completed) -> None:
        """A batch is recorded and acknowledged: forget it."""
        delivery = completed.delivery
        with self._held_lock:
            self._held.get(delivery.queue, set()).discard(delivery.entry_id)
        self._batches.pop(_key(delivery), None)

    # ----------------------------------------------------------------- crashes

    def _pool_broke(self, chunk: Chunk) -> None:
        if chunk.generation == self._generation:
            cause = _death_cause(self._pool)
            log.warning(
                "job %s batch %d: a pool process died (%s); rebuilding the pool",
                chunk.batch.entry.job_id,
                chunk.batch.entry.index,
                cause,
            )
            assert self._pool is not None
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            self._generation += 1
            self.counters["pool_restarts"] += 1
            self._last_cause = cause
        if not chunk.suspect:
            chunk.suspect = True
            self._suspects.append(chunk)
            return
        # It ran alone and broke the pool again: it holds the poison item.
        if chunk.hi - chunk.lo == 1:
            entry = chunk.batch.entry
            message = f"worker process died: {self._last_cause}"
            log.warning(
                "job %s batch %d item %d: %s",
                entry.job_id,
                entry.index,
                entry.start + chunk.lo,
                message,
            )
            self._store(chunk, self._error_blob(chunk.batch, 1, "WorkerProcessDied", message), 1)
            return
        mid = (chunk.lo + chunk.hi) // 2
        self._suspects.extendleft(
            [
                Chunk(chunk.batch, mid, chunk.hi, suspect=True),
                Chunk(chunk.batch, chunk.lo, mid, suspect=True),
            ]
        )

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context(self.settings.start_method)
        if self.settings.start_method == "forkserver":
            context.set_forkserver_preload(["worker.forkserver_preload"])
        return ProcessPoolExecutor(
            max_workers=self.settings.processes,
            mp_context=context,
            initializer=init_child,
            initargs=(list(self.settings.paths),),
        )

    @staticmethod
    def _kill_pool(pool: ProcessPoolExecutor) -> None:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            with contextlib.suppress(Exception):
                process.kill()

    # ----------------------------------------------------------------- threads

    def _hold(self, delivery: Delivery) -> None:
        with self._held_lock:
            self._held.setdefault(delivery.queue, set()).add(delivery.entry_id)

    def _held_snapshot(self) -> dict[QueueKeys, list[Any]]:
        with self._held_lock:
            return {q: sorted(ids) for q, ids in self._held.items() if ids}

    def _reader_loop(self) -> None:
        block_ms = int(self.settings.block_seconds * 1000)
        reclaim_every = self.settings.heartbeat_interval
        next_reclaim = 0.0
        min_idle_ms = int(self.settings.visibility_timeout * 1000)
        backoff = _Backoff()
        while True:
            with self._demand_cond:
                while not self._demand and not self._closed.is_set():
                    self._demand_cond.wait()
                if self._closed.is_set():
                    return
                want, self._demand = self._demand, 0
            found: list[Delivery] = []
            try:
                if time.monotonic() >= next_reclaim:
                    next_reclaim = time.monotonic() + reclaim_every
                    found = self.redis.reclaim(want, min_idle_ms)
                    if found:
                        log.info("reclaimed %d batches whose lease lapsed", len(found))
                if not found and not self._stop.is_set():
                    found = self.redis.read(want, block_ms)
                backoff.reset()
            except REDIS_ERRORS as exc:
                log.warning("reading from Redis failed, retrying in %.1fs: %s", backoff.delay, exc)
                backoff.wait(self._closed)
            self.events.put(("read", found))

    def _writer_loop(self) -> None:
        backoff = _Backoff()
        while True:
            first = self._write_queue.get()
            if first is None:
                return
            done = [first]
            while len(done) < 64:
                try:
                    more = self._write_queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._write_queue.put(None)
                    break
                done.append(more)
            while True:
                try:
                    self.redis.write(done, time.time())
                    backoff.reset()
                    break
                except REDIS_ERRORS as exc:
                    log.warning(
                        "recording %d batches failed (kept in memory), retrying in %.1fs: %s",
                        len(done),
                        backoff.delay,
                        exc,
                    )
                    backoff.wait(threading.Event())
            for completed in done:
                if completed.code in (scripts.JOB_GONE, scripts.JOB_CANCELLED):
                    why = (
                        "no longer exists"
                        if completed.code == scripts.JOB_GONE
                        else "was cancelled"
                    )
                    log.warning(
                        "job %s batch %d: the job %s; results dropped",
                        completed.job_id,
                        completed.index,
                        why,
                    )
                self.events.put(("written", completed))

    def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval
        while True:
            try:
                held = self._held_snapshot()
                if held:
                    self.redis.refresh(held)
                self.redis.publish(self._record(), ttl=interval * 3)
            except REDIS_ERRORS as exc:
                log.warning("heartbeat failed: %s", exc)
            if self._closed.wait(interval):
                return

    def _record(self) -> dict[str, Any]:
        import os
        import socket

        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "processes": self.settings.processes,
            "chunksize": self.settings.chunksize or "auto",
            "queues": ",".join(self.settings.queues),
            "started_at": self.started_at,
            "heartbeat_at": time.time(),
            **self.counters,
        }


class _Backoff:
    """Exponential backoff between retries: 0.1s doubling to 5s."""

    def __init__(self) -> None:
        self.delay = 0.1

    def reset(self) -> None:
        self.delay = 0.1

    def wait(self, stop: threading.Event) -> None:
        stop.wait(self.delay)
        self.delay = min(5.0, self.delay * 2)


def _death_cause(pool: ProcessPoolExecutor | None) -> str:
    """Name what killed a pool process: a signal or an exit code, when we can tell."""
    processes = getattr(pool, "_processes", None) or {}
    codes = [p.exitcode for p in list(processes.values()) if p.exitcode]
    # The pool terminates its other processes (SIGTERM) once one has died.
    codes.sort(key=lambda code: code == -signal.SIGTERM)
    for code in codes:
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"signal {-code} ({signal.Signals(-code).name})"
            return f"signal {-code}"
        return f"exit code {code}"
    return "cause unknown"


def _key(delivery: Delivery) -> tuple[str, bytes]:
    return (delivery.queue.name, delivery.entry_id)


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"{len(value)} items"
    return f"a {type(value).__name__}, not a list"


def _format_counters(counters: dict[str, int]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counters.items())
