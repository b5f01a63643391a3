"""Cutting an iterable into batches and streaming them into a queue.

The iterable is consumed lazily: at most ``FLUSH_BATCHES`` encoded batches (and
about ``FLUSH_BYTES``) wait in memory before one pipeline sends them, so a
generator of millions of items keeps producer memory flat. The first sends go
out sooner (``FIRST_FLUSH_BYTES``, doubling), so that nodes start while the rest
is encoded. A job small enough to go out in one pipeline is created already
sealed: one round trip in all.

If the iterable raises or an item cannot be encoded, what was already sent is
deleted (entries and job keys), so no half-enqueued job is left behind.

A ``producer.rejects.Rejected`` item (an input known to be bad) is never
queued: runs of them are recorded as failed items right away (see that module).

With a keyring, every batch entry, the job's meta and the results the producer
records itself are signed (``taskfan.signing``). Every batch is checked against
the limits (``taskfan.limits``): an item over ``max_item_bytes`` stops the
enqueue naming its index; a batch over ``max_batch_bytes`` is split into parts
that fit, like one over ``split_bytes``, whatever the batch size.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis

from producer import rejects
from producer.lease import LeaseKeeper
from producer.records import JobRecords, JobSpec, new_job_id, new_nonce
from taskfan import scripts
from taskfan.connection import RedisClient, translate_errors
from taskfan.errors import EncodeError, JobAbandoned, LimitExceeded
from taskfan.keys import JobKeys, QueueKeys
from taskfan.limits import DEFAULT_LIMITS, Limits, format_size
from taskfan.pipelines import Sequenced
from taskfan.protocol import BatchEntry
from taskfan.settings import DEFAULT_ENQUEUE_LEASE
from taskfan.signing import Keyring

FLUSH_BATCHES = 16
FLUSH_BYTES = 8 * 1024 * 1024
#: a job's first batches go out once they hold this many encoded bytes, not
#: ``FLUSH_BYTES``, and each send after waits for twice as many as the one
#: before, up to ``FLUSH_BYTES``: nodes start on the first batches while the
#: producer encodes the rest (100,000 small items: about 10 ms of encoding,
#: which nodes otherwise spent idle). A job that encodes to less still goes out
#: in one round trip, born sealed; a large one pays a few round trips more.
FIRST_FLUSH_BYTES = 256 * 1024
#: batch_size meaning "ramp": batches grow 1, 2, 4, ... up to the job's ramp_max,
#: so the first results come back fast and small jobs spread
RAMP = 0


def batches_of(items: Iterable[Any], spec: JobSpec, cap: Callable[[], int]) -> Iterator[list[Any]]:
    """Cut ``items`` into lists of ``spec.batch_size`` (or a ramp), never more
    than ``cap()`` items."""
    iterator = iter(items)
    ramp = spec.batch_size == RAMP
    size = 1 if ramp else spec.batch_size
    while batch := list(itertools.islice(iterator, min(size, cap()))):
        yield batch
        if ramp:
            size = min(spec.ramp_max, size * 2)


class Enqueuer:
    """Sends one job's batches; ``run`` returns the job id."""

    def __init__(
        self,
        client: RedisClient,
        spec: JobSpec,
        job_id: str | None = None,
        *,
        keyring: Keyring | None = None,
        limits: Limits = DEFAULT_LIMITS,
        lease: float = DEFAULT_ENQUEUE_LEASE,
    ) -> None:
        self.client = client
        #: seconds the job outlives this producer while unsealed (producer.lease)
        self.lease = lease
        self._keeper: LeaseKeeper | None = None
        self.spec = spec
        self.keyring = keyring
        self.limits = limits
        self.job_id = job_id or new_job_id()
        self.nonce = new_nonce()
        self.job = JobKeys(self.job_id)
        self.queue = QueueKeys(spec.queue)
        #: what writes the job's meta, counters and entries (producer.records)
        self.records = JobRecords(self.job_id, spec.queue, self.nonce, keyring)
        self.total = 0
        self.batches = 0
        self._sent_ids: list[bytes] = []
        self._created = False
        #: items per batch at most, lowered when batches encode too large
        self._cap = sys.maxsize

    def run(self, items: Iterable[Any]) -> str:
        try:
            with translate_errors(f"enqueueing job {self.job_id} on queue {self.spec.queue}"):
                self._run(items)
        except JobAbandoned:
            raise  # ended by others meanwhile: its keys already have their TTL
        except BaseException:
            self.abort()
            raise
        finally:
            if self._keeper is not None:
                self._keeper.stop()
        return self.job_id

    def _run(self, items: Iterable[Any]) -> None:
        pending: list[BatchEntry | rejects.RecordedBatch] = []
        size = 0
        flush_bytes = FIRST_FLUSH_BYTES
        for batch in batches_of(items, self.spec, lambda: self._cap):
            for rejected, run in rejects.runs(batch):
                made = [self._rejected(run)] if rejected else self._entries(run)
                pending.extend(made)
                size += sum(len(entry.payload) for entry in made)
            if len(pending) >= FLUSH_BATCHES or size >= flush_bytes:
                self._flush(pending, seal=False)
                pending, size = [], 0
                flush_bytes = min(FLUSH_BYTES, 2 * flush_bytes)
        if not self._created:
            self._flush(pending, seal=True)  # small job: one round trip, born sealed
            return
        if pending:
            self._flush(pending, seal=False)
        self._seal()

    def _seal(self) -> None:
        """Record the job's totals (signed when a keyring is set): no more batches."""
        code = self.records.seal(self.client, self.total, self.batches, time.time())
        if code == scripts.JOB_ABANDONED:
            raise JobAbandoned(self.job_id)

    def _entries(self, items: list[Any]) -> list[BatchEntry]:
        """One entry, or several when the encoding passes ``split_bytes`` (automatic
        sizes) or ``max_batch_bytes`` (always); an item over ``max_item_bytes``
        stops the enqueue (LimitExceeded, naming the item)."""
        limits = self.limits
        payload = self._encode(items)
        if len(payload) > limits.max_item_bytes:
            self._check_items(items)
        limit = min(self.spec.split_bytes or limits.max_batch_bytes, limits.max_batch_bytes)
        if len(payload) <= limit or len(items) == 1:
            if len(payload) > limits.max_batch_bytes:
                raise LimitExceeded(
                    f"job {self.job_id}: item {self.total} encodes to a batch of "
                    f"{format_size(len(payload))}, over max_batch_bytes "
                    f"({format_size(limits.max_batch_bytes)})"
                )
            return [self._entry(items, payload)]
        parts = math.ceil(len(payload) / limit)
        size = math.ceil(len(items) / parts)
        self._cap = max(1, min(self._cap, size))
        parts_items = (items[lo : lo + size] for lo in range(0, len(items), size))
        return [entry for part in parts_items for entry in self._entries(part)]

    def _encode(self, items: list[Any]) -> bytes:
        spec = self.spec
        try:
            return spec.codec.dumps(items)
        except EncodeError as exc:
            offset, error = next(
                ((i, e) for i, e in enumerate(map(self._encode_error, items)) if e), (0, exc)
            )
            raise EncodeError(
                f"job {self.job_id}: item {self.total + offset} cannot be encoded with the "
                f"{spec.codec.name} codec: {error}"
            ) from exc

    def _check_items(self, items: list[Any]) -> None:
        """Raise LimitExceeded naming the first item over max_item_bytes."""
        limit = self.limits.max_item_bytes
        for offset, item in enumerate(items):
            size = len(self.spec.codec.dumps(item))
            if size > limit:
                raise LimitExceeded(
                    f"job {self.job_id}: item {self.total + offset} encodes to "
                    f"{format_size(size)} with the {self.spec.codec.name} codec, over "
                    f"max_item_bytes ({format_size(limit)}): pass large data by reference "
                    "(a path or URL the task opens), or raise the limit "
                    "(TASKFAN_MAX_ITEM_BYTES) on producers and nodes"
                )

    def _entry(self, items: list[Any], payload: bytes) -> BatchEntry:
        spec = self.spec
        entry = BatchEntry(
            job_id=self.job_id,
            index=self.batches,
            start=self.total,
            count=len(items),
            fn_ref=spec.fn_ref,
            codec=spec.codec.name,
            mode=spec.mode,
            chunksize=spec.chunksize,
            payload=payload,
            options=spec.options,
            wrap=spec.wrap,
            bound=spec.bound,
            initializer=spec.initializer,
            initargs=spec.initargs,
        )
        self.total += len(items)
        self.batches += 1
        return entry

    def _rejected(self, items: list[Any]) -> rejects.RecordedBatch:
        batch = rejects.recorded_batch(self.batches, self.total, items, self.spec.codec)
        payload = self.records.result_entry(batch.index, self.spec.codec.name, batch.payload)
        batch = dataclasses.replace(batch, payload=payload)
        self.total += batch.count
        self.batches += 1
        return batch

    def _encode_error(self, item: Any) -> EncodeError | None:
        try:
            self.spec.codec.dumps(item)
        except EncodeError as exc:
            return exc
        return None

    def _flush(self, entries: list[BatchEntry | rejects.RecordedBatch], seal: bool) -> None:
        seq = Sequenced(self.client)
        pipe: Any = seq.pipe
        now = time.time()
        if not self._created:
            # sealed: born whole (all its entries are these); unsealed: lives while we do
            sealed = (self.total, self.batches) if seal else None
            self.records.create(seq, self.spec, now, lease=self.lease, sealed=sealed)
            self._created = True
            pipe = seq.pipe
        elif entries:
            assert self._keeper is not None
            self._keeper.check()
            self.records.count(pipe, sum(e.count for e in entries), len(entries))
        queued = [e for e in entries if isinstance(e, BatchEntry)]
        if len(queued) < len(entries):
            scripts.load_all(self.client)  # the pipeline calls record.lua by SHA
        for entry in entries:
            if isinstance(entry, rejects.RecordedBatch):
                self.records.record(pipe, entry.index, entry.payload, entry.count, now)
        for entry in queued:
            self.records.queue_entry(pipe, entry, now)
        replies = seq.execute()
        self._sent_ids.extend(replies[len(replies) - len(queued) :])
        if not seal and self._keeper is None:  # the meta exists now (one server: only now)
            self._keeper = LeaseKeeper(self.client, self.job, self.lease).start()

    def abort(self) -> None:
        """Delete whatever this enqueue already sent."""
        if not self._created:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for start in range(0, len(self._sent_ids), 1000):
                pipe.xdel(self.queue.stream, *self._sent_ids[start : start + 1000])
            pipe.delete(*self.job.all())
            pipe.zrem(self.queue.jobs, self.job_id)
            pipe.execute()
        except redis.RedisError:
            pass  # the original error is the one to report
