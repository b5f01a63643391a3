"""The node's bookkeeping: batches in, chunks out, results joined per batch.

No Redis, no processes, no threads: the node feeds it deliveries and chunk
results and sends what it returns, so every rule here is tested alone.

Rules:
- a batch is cut into chunks of the job's chunksize, else the node's, else one
  measured per function (``worker.sizing``);
- at most ``2 * processes`` chunks are in the pool (one running and one queued per
  process), so the pool stays busy across batch boundaries;
- chunks of a job with a ``hard_timeout`` hold one item and enter the pool only
  when a process is free, so their clock starts when they start;
- after a pool breaks, the chunks that were in it are suspects and run one at a
  time; a suspect that breaks the pool again is halved until the item that kills
  its process stands alone, and that item fails with the cause;
- an item the pool process says to retry waits in the node (``worker.retries``),
  not in the process; once due it goes back to the pool ahead of new chunks, in a
  chunk with the other items of its batch due then. The batch is done when every
  item has its final outcome. A node holds at most ``HELD_PER_PROCESS`` batches
  per process, so batches waiting for retries cannot pile up without end.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskfan.codec import get_codec
from taskfan.errors import ProtocolError, TaskfanError
from taskfan.logs import batch_extra
from taskfan.outcomes import encode_result
from taskfan.protocol import BatchEntry
from worker.child import ChunkResult, Retry
from worker.guard import Guard
from worker.parts import Part
from worker.redis_io import Completed, Delivery
from worker.retries import RetryHeap
from worker.sizing import ChunkSizer

log = logging.getLogger(__name__)

#: batches a node holds per process, at most (reached only when many wait for retries)
HELD_PER_PROCESS = 64


@dataclass(eq=False)
class Batch:
    """A batch this node holds: its entry, its items and the chunks' results so far."""

    delivery: Delivery
    entry: BatchEntry
    items: list[Any]
    started: float
    #: offset of a part's first item -> its blob (``worker.parts``: a chunk, or a run of one)
    blobs: dict[int, bytes] = field(default_factory=dict)
    #: offset of a part's first item -> its failed items
    failures: dict[int, int] = field(default_factory=dict)
    failed: int = 0
    remaining: int = 0  #: items without their final outcome, those waiting to retry included
    retrying: int = 0  #: items waiting for a retry (``worker.retries``)
    retried: int = 0  #: retries so far
    dropped: bool = False  #: given up (handed back, or its job ended): its retries are void


@dataclass(eq=False)
class Chunk:
    """Items ``lo`` to ``hi - 1`` of a batch, or, for a chunk of retries, the
    items ``retrying`` names ((offset, attempt) each; ``lo`` and ``hi`` span them)."""

    batch: Batch
    lo: int
    hi: int
    suspect: bool = False  #: was in a pool that broke; runs alone
    deadline: float | None = None  #: monotonic time its hard timeout ends, once in the pool
    retrying: tuple[tuple[int, int], ...] | None = None

    @classmethod
    def of_retries(
        cls, batch: Batch, retrying: Sequence[tuple[int, int]], suspect: bool = False
    ) -> Chunk:
        return cls(batch, retrying[0][0], retrying[-1][0] + 1, suspect, retrying=tuple(retrying))

    @property
    def size(self) -> int:
        return self.hi - self.lo if self.retrying is None else len(self.retrying)

    def items(self) -> list[Any]:
        if self.retrying is None:
            return self.batch.items[self.lo : self.hi]
        return [self.batch.items[offset] for offset, _ in self.retrying]

    def halves(self) -> list[Chunk]:
        """Two suspects of half the items each."""
        if self.retrying is None:
            mid = (self.lo + self.hi) // 2
            return [Chunk(self.batch, self.lo, mid, True), Chunk(self.batch, mid, self.hi, True)]
        mid = len(self.retrying) // 2
        return [
            Chunk.of_retries(self.batch, half, True)
            for half in (self.retrying[:mid], self.retrying[mid:])
        ]

    def runs(self) -> list[tuple[int, int, list[int]]]:
        """(lo, hi, attempt of each item) per run of items that follow each other."""
        if self.retrying is None:
            return [(self.lo, self.hi, [])]
        runs: list[tuple[int, int, list[int]]] = []
        for offset, attempt in self.retrying:
            if runs and runs[-1][1] == offset:
                lo, _, attempts = runs[-1]
                runs[-1] = (lo, offset + 1, [*attempts, attempt])
            else:
                runs.append((offset, offset + 1, [attempt]))
        return runs

    def where(self) -> str:
        entry = self.batch.entry
        if self.retrying is not None:
            tries = ", ".join(f"{entry.start + o} (attempt {a})" for o, a in self.retrying[:5])
            more = f" and {self.size - 5} more" if self.size > 5 else ""
            return (
                f"job {entry.job_id} batch {entry.index} item{'s' * (self.size > 1)} {tries}{more}"
            )
        first = entry.start + self.lo
        items = f"item {first}" if self.size == 1 else f"items {first}-{first + self.size - 1}"
        return f"job {entry.job_id} batch {entry.index} {items}"


def key(delivery: Delivery) -> tuple[str, bytes]:
    return (delivery.queue.name, delivery.entry_id)


class Scheduler:
    def __init__(
        self,
        processes: int,
        sizer: ChunkSizer,
        max_deliveries: int = 5,
        clock: Callable[[], float] = time.monotonic,
        guard: Guard | None = None,
    ) -> None:
        self.processes = processes
        self.clock = clock
        self.sizer = sizer
        self.max_deliveries = max_deliveries
        #: signatures, refusals and limits (worker.guard); the default checks nothing
        self.guard = guard or Guard()
        self.batches: dict[tuple[str, bytes], Batch] = {}
        self.pending: deque[Chunk] = deque()
        self.suspects: deque[Chunk] = deque()
        #: how many chunks the last batch accepted was cut into
        self.last_chunks = 1
        self.in_pool: set[Chunk] = set()
        self.retries = RetryHeap()

    # ----------------------------------------------------------------- intake

    def accept(self, delivery: Delivery, now: float | None = None) -> Completed | None:
        """Take a delivered entry; returns a Completed when there is nothing to run."""
        where = f"queue {delivery.queue.name} entry {delivery.entry_id.decode()}"
        extra = _named(delivery)
        if extra:
            where += f" (job {extra['job']} batch {extra['batch']})"
        if delivery.fields is None:
            return Completed(delivery, "", "", b"", 0, 0)
        started = time.monotonic() if now is None else now
        bad_signature = self.guard.bad_signature(delivery)
        if bad_signature is not None:
            return self._reject_unverified(delivery, where, bad_signature, started)
        try:
            entry = BatchEntry.parse(delivery.fields, where)
        except ProtocolError as exc:
            log.warning("%s: dead-lettered: %s", where, exc, extra=extra)
            return Completed(delivery, "", "", b"", 0, 0, dead_reason=str(exc))
        if delivery.skip:
            log.info("%s: skipped: %s", where, delivery.skip, extra=extra)
            return Completed(delivery, "", "", b"", 0, 0)
        batch = Batch(delivery, entry, [], started, remaining=entry.count)
        refusal = self.guard.refusal(entry)
        if refusal is not None:
            type_name, reason = refusal
            log.warning("%s: dead-lettered: %s", where, reason, extra=extra)
            return self.fail_batch(batch, type_name, reason, dead=True)
        try:
            items = get_codec(entry.codec).loads(entry.payload)
            if not isinstance(items, list) or len(items) != entry.count:
                raise ProtocolError(
                    f"payload holds {_describe(items)}, expected {entry.count} items"
                )
        except Exception as exc:  # a bad payload fails its items, never the node
            reason = f"job {entry.job_id} batch {entry.index}: cannot decode the batch: {exc}"
            log.warning("%s: dead-lettered: %s", where, reason, extra=extra)
            return self.fail_batch(batch, "BadBatch", reason, dead=True)
        batch.items = items
        if delivery.deliveries > self.max_deliveries:
            reason = (
                f"job {entry.job_id} batch {entry.index}: delivered {delivery.deliveries} times, "
                f"more than max_deliveries={self.max_deliveries} (nodes running it died or were "
                "cut off)"
            )
            log.warning("%s: dead-lettered: %s", where, reason, extra=extra)
            return self.fail_batch(batch, "DeliveryLimit", reason, dead=True)
        return self.admit(batch)

    def admit(self, batch: Batch) -> Completed | None:
        """Take a batch whose entry and items are known: cut it into chunks.

        ``accept``'s second half, and the way in for batches that do not come
        from a stream entry (the RQ source's, ``worker.rq_source``)."""
        entry = batch.entry
        if entry.count == 0:
            return self.finish(batch)
        self.batches[key(batch.delivery)] = batch
        if entry.options.hard_timeout:
            size = 1
        else:
            size = self.sizer.chunksize(entry.fn_ref, entry.count, entry.chunksize)
        for lo in range(0, entry.count, size):
            self.pending.append(Chunk(batch, lo, min(lo + size, entry.count)))
        self.last_chunks = -(-entry.count // size)
        return None

    def batches_wanted(self) -> int:
        """How many batches to read: none while a chunk per process waits, else
        enough to fill the pool's free slots (two chunks per process), counting
        that a batch gives as many chunks as the last one did. So a node of
        large batches holds one at a time, not one per free slot."""
        backlog = len(self.pending) + len(self.suspects)
        if backlog >= self.processes or len(self.batches) >= HELD_PER_PROCESS * self.processes:
            return 0
        slots = max(1, 2 * self.processes - len(self.in_pool) - backlog)
        return -(-slots // max(1, self.last_chunks))

    def _reject_unverified(
        self, delivery: Delivery, where: str, reason: str, started: float
    ) -> Completed:
        """Dead-letter an unsigned or changed entry; record its items as failed,
        unsigned, when it names a job that exists (see worker.guard)."""
        assert delivery.fields is not None
        message = f"{where}: {reason}"  # ``where`` names the job and batch it claims
        try:
            entry: BatchEntry | None = BatchEntry.parse(delivery.fields, where)
        except ProtocolError:
            entry = None
        log.warning("%s: dead-lettered: %s", where, reason, extra=_named(delivery))
        if entry is None or delivery.skip:
            return Completed(delivery, "", "", b"", 0, 0, dead_reason=message)
        batch = Batch(delivery, entry, [], started, remaining=entry.count)
        return self.fail_batch(batch, "BadSignature", message, dead=True, signed=False)

    def take_unstarted(self) -> list[Batch]:
        """Remove and return the batches none of whose chunks has run or is running
        (a stopping node hands them back rather than start them)."""
        started = {id(c.batch) for c in (*self.in_pool, *self.suspects)}
        unstarted = [
            b
            for b in self.batches.values()
            if not b.blobs and not b.retried and id(b) not in started
        ]
        gone = {id(b) for b in unstarted}
        self.pending = deque(c for c in self.pending if id(c.batch) not in gone)
        for batch in unstarted:
            del self.batches[key(batch.delivery)]
        return unstarted

    def take_waiting(self, after: float) -> list[Batch]:
        """Remove and return the batches that only wait for retries, none due
        before ``after`` (a stopping node cannot finish them in its grace period)."""
        busy = self._busy()
        earliest = self.retries.earliest()
        waiting = [
            b
            for b in self.batches.values()
            if b.retrying and id(b) not in busy and earliest.get(id(b), after) >= after
        ]
        for batch in waiting:
            self.retries.drop(batch)
            del self.batches[key(batch.delivery)]
        return waiting

    def ended(self, jobs: Mapping[str, str]) -> list[Completed]:
        """Jobs that ended (cancelled, gone: job id -> why) while items of theirs
        wait for retries: their batches that only wait for retries are dropped,
        to be acknowledged unrecorded (record.lua would refuse them anyway)."""
        busy = self._busy()
        out = []
        for batch in list(self.batches.values()):
            entry = batch.entry
            if entry.job_id in jobs and batch.retrying and id(batch) not in busy:
                dropped = self.retries.drop(batch)
                log.info(
                    "job %s batch %s: %s; %d items waiting to retry dropped, batch acknowledged "
                    "unrecorded",
                    entry.job_id,
                    entry.field,
                    jobs[entry.job_id],
                    dropped,
                    extra=batch_extra(entry.job_id, entry.field, retries_dropped=dropped),
                )
                out.append(Completed(batch.delivery, "", "", b"", 0, 0))
        return out

    def _busy(self) -> set[int]:
        """ids of the batches with a chunk in the pool or waiting to go there."""
        return {id(c.batch) for c in (*self.in_pool, *self.suspects, *self.pending)}

    def release(self, delivery: Delivery) -> None:
        """The batch is recorded and acknowledged, or handed back: forget it."""
        batch = self.batches.pop(key(delivery), None)
        if batch is not None:
            self.retries.drop(batch)

    # ----------------------------------------------------------------- to the pool

    def next_chunk(self) -> Chunk | None:
        """The chunk to put in the pool now, if any."""
        if self.suspects:
            return self.suspects.popleft() if not self.in_pool else None
        if not self.pending or len(self.in_pool) >= 2 * self.processes:
            return None
        if self.pending[0].batch.entry.options.hard_timeout and len(self.in_pool) >= self.processes:
            return None  # its clock must start when it starts: wait for a free process
        return self.pending.popleft()

    def retries_due(self, now: float) -> None:
        """Items whose retry is due go to the front of the queue, in chunks of
        their batch's items due together."""
        chunks = []
        for batch, due in self.retries.pop_due(now):
            entry = batch.entry
            if entry.options.hard_timeout:
                size = 1
            else:
                size = self.sizer.chunksize(entry.fn_ref, len(due), entry.chunksize)
            chunks += [Chunk.of_retries(batch, due[i : i + size]) for i in range(0, len(due), size)]
        self.pending.extendleft(reversed(chunks))

    def next_retry(self) -> float | None:
        """When the earliest retry is due (monotonic seconds)."""
        return self.retries.next_due()

    def sent(self, chunk: Chunk, now: float) -> None:
        hard = chunk.batch.entry.options.hard_timeout
        chunk.deadline = now + hard if hard else None
        self.in_pool.add(chunk)

    def unsent(self, chunk: Chunk) -> None:
        """The pool refused the chunk (it is broken): put it back at the front."""
        (self.suspects if chunk.suspect else self.pending).appendleft(chunk)

    def next_deadline(self) -> float | None:
        deadlines = [c.deadline for c in self.in_pool if c.deadline is not None]
        return min(deadlines) if deadlines else None

    def expired(self, now: float) -> list[Chunk]:
        return [c for c in self.in_pool if c.deadline is not None and c.deadline <= now]

    # ----------------------------------------------------------------- from the pool

    def done(self, chunk: Chunk, result: ChunkResult, now: float | None = None) -> Completed | None:
        self.in_pool.discard(chunk)
        self.sizer.observe(chunk.batch.entry.fn_ref, chunk.size, result.seconds)
        now = self.clock() if now is None else now
        return self._store(chunk.batch, result.parts, result.retries, now)

    def error(self, chunk: Chunk, type_name: str, message: str) -> Completed | None:
        """Every item of the chunk fails with the same error (e.g. a hard timeout)."""
        self.in_pool.discard(chunk)
        batch = chunk.batch
        parts = [
            Part(
                lo,
                hi - lo,
                hi - lo,
                self._error_blob(batch, lo, hi - lo, type_name, message, tries),
            )
            for lo, hi, tries in chunk.runs()
        ]
        return self._store(batch, parts, (), self.clock())

    def requeue(self, chunk: Chunk) -> None:
        """Run the chunk again (the pool was stopped under it for another's sake)."""
        self.in_pool.discard(chunk)
        chunk.deadline = None
        (self.suspects if chunk.suspect else self.pending).appendleft(chunk)

    def crashed(self, chunk: Chunk, cause: str) -> Completed | None:
        """The chunk was in a pool whose process died."""
        self.in_pool.discard(chunk)
        chunk.deadline = None
        if not chunk.suspect:
            chunk.suspect = True
            self.suspects.append(chunk)
            return None
        # It ran alone and broke the pool again: it holds the poison item.
        if chunk.size == 1:
            message = f"worker process died: {cause}"
            entry = chunk.batch.entry
            log.warning(
                "%s: %s", chunk.where(), message, extra=batch_extra(entry.job_id, entry.field)
            )
            return self.error(chunk, "WorkerProcessDied", message)
        self.suspects.extendleft(reversed(chunk.halves()))
        return None

    # ----------------------------------------------------------------- batches

    def _store(
        self, batch: Batch, parts: Sequence[Part], retries: Sequence[Retry], now: float
    ) -> Completed | None:
        for part in parts:
            # Settled items' inputs are not needed again (their outcomes keep what a
            # retry round needs): free them now rather than with the whole batch.
            batch.items[part.offset : part.offset + part.size] = itertools.repeat(None, part.size)
            batch.blobs[part.offset] = part.blob
            batch.failures[part.offset] = part.failed
            batch.failed += part.failed
            batch.remaining -= part.size
        for retry in retries:
            self.retries.push(now + retry.delay, batch, retry.offset, retry.attempt)
        batch.retried += len(retries)
        return self.finish(batch) if batch.remaining == 0 else None

    def finish(
        self, batch: Batch, dead_reason: str | None = None, signed: bool = True
    ) -> Completed:
        """The batch's result entry, kept under max_batch_bytes and signed (unless
        ``signed`` is False: see worker.guard)."""
        entry = batch.entry
        result = self._encode(batch)
        if len(result) > self.guard.limits.max_batch_bytes:
            log.warning(
                "job %s batch %s: its results encode to %d bytes, over max_batch_bytes; "
                "the items of its largest chunks fail instead",
                entry.job_id,
                entry.field,
                len(result),
            )
            batch.failed += self.guard.fit(
                batch.blobs,
                batch.failures,
                entry.count,
                len(result),
                lambda lo, n, message: self._error_blob(
                    batch, lo, n, "ResultTooLarge", message, keep_inputs=False
                ),
            )
            result = self._encode(batch)
        if signed:
            result = self.guard.seal(entry, result)
        ok = entry.count - batch.failed
        completed = Completed(
            batch.delivery, entry.job_id, entry.field, result, ok, batch.failed, dead_reason
        )
        if dead_reason is None:
            cost = self.sizer.to_publish(entry.fn_ref, self.clock())
            if cost is not None:
                completed.cost = (entry.fn_ref, cost)
        return completed

    @staticmethod
    def _encode(batch: Batch) -> bytes:
        entry = batch.entry
        blobs = [batch.blobs[lo] for lo in sorted(batch.blobs)]
        return encode_result(entry.start, entry.count, batch.failed, blobs, entry.offsets)

    def fail_batch(
        self, batch: Batch, type_name: str, message: str, dead: bool, signed: bool = True
    ) -> Completed:
        entry = batch.entry
        count = entry.count
        if not self.guard.can_record_failures(count, message):
            # Too many items to record as failed within max_batch_bytes: the entry
            # still leaves the queue, but its job will not finish.
            log.warning(
                "job %s batch %s: %d items are too many to record as failed; dead-lettered only",
                entry.job_id,
                entry.field,
                count,
            )
            return Completed(batch.delivery, "", "", b"", 0, 0, dead_reason=message)
        batch.blobs = {0: self._error_blob(batch, 0, count, type_name, message)}
        batch.failures = {0: count}
        batch.failed = count
        batch.remaining = 0
        return self.finish(batch, dead_reason=message if dead else None, signed=signed)

    @staticmethod
    def _error_blob(
        batch: Batch,
        lo: int,
        count: int,
        type_name: str,
        message: str,
        attempts: Sequence[int] = (),
        keep_inputs: bool = True,
    ) -> bytes:
        """Every item fails with the message; inputs are kept where known, for
        retry rounds. ``attempts``: the attempt each item made (empty: its first)."""
        kept = batch.items[lo : lo + count] if keep_inputs else []
        if len(kept) == count:
            errors = [[i, type_name, message, "", None, kept[i]] for i in range(count)]
        else:
            errors = [[i, type_name, message, "", None] for i in range(count)]
        tries = [[i, n] for i, n in enumerate(attempts) if n > 1]
        try:
            codec = get_codec(batch.entry.codec)
        except TaskfanError:
            codec = get_codec("json")
        return codec.dumps([[None] * count, errors, tries])


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"{len(value)} items"
    return f"a {type(value).__name__}, not a list"


def _named(delivery: Delivery) -> dict[str, Any]:
    """The job and batch an entry names, for log lines, as far as it names them."""
    fields = delivery.fields or {}
    job, batch = fields.get(b"j"), fields.get(b"b")
    if job is None:
        return {}
    text = batch.decode("utf-8", "replace") if batch is not None else "?"
    if b"r" in fields:
        text += "." + fields[b"r"].decode("utf-8", "replace")
    # Anyone can write an entry: a name of a megabyte must not make every line one.
    return batch_extra(job[:64].decode("utf-8", "replace"), text[:64])
