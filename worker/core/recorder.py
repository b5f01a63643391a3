"""A finished batch becomes what the node records: a result entry in a Completed.

The entry frames the batch's parts (``worker.pool.outcome_parts``) in offset order without
decoding them (``taskfan.outcomes``), is kept under ``max_batch_bytes`` by
failing the items of its largest parts, and is signed when the node has a
secret (``worker.core.entry_checks``). A batch whose items all fail for one reason (refused,
undecodable, delivered too often) gets one error blob for them all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from taskfan.codec import get_codec
from taskfan.errors import TaskfanError
from taskfan.outcomes import encode_result
from worker.core.batches import Batch, Completed
from worker.core.chunk_sizing import ChunkSizer
from worker.core.entry_checks import Guard
from worker.pool.outcome_parts import encode

log = logging.getLogger(__name__)


class Recorder:
    def __init__(
        self, guard: Guard, sizer: ChunkSizer, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.guard = guard
        self.sizer = sizer
        self.clock = clock

    def finish(
        self, batch: Batch, dead_reason: str | None = None, signed: bool = True
    ) -> Completed:
        """The batch's result entry, kept under max_batch_bytes and signed (unless
        ``signed`` is False: see worker.core.entry_checks)."""
        entry = batch.entry
        result = self.encode(batch)
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
                lambda lo, n, message: self.error_blob(
                    batch, lo, n, "ResultTooLarge", message, keep_inputs=False
                ),
            )
            result = self.encode(batch)
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
    def encode(batch: Batch) -> bytes:
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
            return Completed.dead_letter(batch.delivery, message)
        batch.blobs = {0: self.error_blob(batch, 0, count, type_name, message)}
        batch.failures = {0: count}
        batch.failed = count
        batch.remaining = 0
        return self.finish(batch, dead_reason=message if dead else None, signed=signed)

    @staticmethod
    def error_blob(
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
        # As a child encodes: an input that cannot be encoded (its own __reduce__
        # raising) is dropped, one a reader may not decode is encoded on its own.
        return encode([None] * count, errors, tries, codec, None)[0]
