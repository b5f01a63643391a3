"""A delivered stream entry becomes a batch to run, or a Completed saying why not.

In order, before anything of the entry is decoded or imported: an entry
deleted meanwhile is acknowledged; the signature is checked on the raw fields
(``worker.core.entry_checks``); the fields are parsed (``taskfan.protocol``); a batch of a
cancelled or vanished job is skipped; a batch of a function this node cannot
run goes back for another node (``worker.core.unrunnable``); the guard's refusals
apply, the one on the size its payload would take decoded (estimated from its
bytes) included. Then, once the node's budget for decoded items has room for
it (``worker.core.decoded_budget``), ``decode`` decodes the payload and checks the delivery
count. A bad entry is dead-lettered
with the reason, its items recorded as failed when its job is known: no entry
can crash a node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from taskfan.boundary import brief
from taskfan.codec import get_codec
from taskfan.errors import ProtocolError
from taskfan.limits import decoded_size
from taskfan.logs import batch_extra
from taskfan.protocol import BatchEntry
from worker.core.batches import CHUNK_BYTES, Batch, Completed, Delivery
from worker.core.entry_checks import Guard
from worker.core.recorder import Recorder
from worker.core.unrunnable import Unrunnable

log = logging.getLogger(__name__)


class Intake:
    def __init__(
        self,
        guard: Guard,
        max_deliveries: int,
        recorder: Recorder,
        unrunnable: Unrunnable | None = None,
        chunk_size: Callable[[BatchEntry], int] | None = None,
    ) -> None:
        self.guard = guard
        #: items per chunk the scheduler will cut a batch into (its chunks count too)
        self.chunk_size = chunk_size
        self.max_deliveries = max_deliveries
        self.recorder = recorder
        #: functions this node cannot import or may not run (``worker.core.unrunnable``)
        self.unrunnable = unrunnable or Unrunnable()

    def take(self, delivery: Delivery, started: float) -> Batch | Completed:
        """The batch to run, not decoded yet (``decode``; ``batch.decoded`` is the
        estimate of what it will take), or a Completed when there is nothing to run
        (one to hand back, ``give_back``, when another node should run it)."""
        where, extra = _where(delivery)
        if delivery.fields is None:
            return Completed.ack_only(delivery)
        bad_signature = self.guard.bad_signature(delivery)
        if bad_signature is not None:
            return self._reject_unverified(delivery, where, bad_signature, started)
        replay = self.guard.replay(delivery)
        if replay is not None:
            log.warning("%s: dead-lettered: %s", where, replay, extra=extra)
            return Completed.dead_letter(delivery, f"{where}: {replay}")
        try:
            entry = BatchEntry.parse(delivery.fields, where)
        except ProtocolError as exc:
            return self._reject_malformed(delivery, where, exc, started)
        if delivery.skip:
            log.info("%s: skipped: %s", where, delivery.skip, extra=extra)
            return Completed.ack_only(delivery)
        batch = Batch(delivery, entry, [], started, remaining=entry.count)
        verdict = self._verdict(delivery, entry)
        if verdict is not None and not verdict[1]:
            return Completed.handed_back(delivery)  # another node may run it
        refusal = self.guard.refusal(entry)
        if verdict is not None and verdict[0] == "FunctionNotAllowed":
            refusal = verdict  # no live node allows it: fail, explained, nothing decoded
        if refusal is not None:
            type_name, reason = refusal
            log.warning("%s: dead-lettered: %s", where, reason, extra=extra)
            return self.recorder.fail_batch(batch, type_name, reason, dead=True)
        size, containers = decoded_size(entry.codec, entry.payload)
        batch.chunk_size = self.chunk_size(entry) if self.chunk_size and entry.count else 0
        chunks = -(-entry.count // batch.chunk_size) if batch.chunk_size else 0
        batch.decoded = size + CHUNK_BYTES * chunks
        too_large = self.guard.decoded_refusal(entry, batch.decoded, containers, chunks)
        if too_large is not None:
            log.warning("%s: dead-lettered: %s", where, too_large, extra=extra)
            return self.recorder.fail_batch(batch, "BatchTooLarge", too_large, dead=True)
        if verdict is not None:  # no live node serving the queue can import it
            # Decoded first: its items keep their inputs, for a retry round.
            failed = self._decode_items(batch)
            if failed is None:
                log.warning("%s: items failed: %s", where, verdict[1], extra=extra)
                failed = self.recorder.fail_batch(batch, verdict[0], verdict[1], dead=False)
            return failed
        return batch

    def decode(self, batch: Batch) -> Batch | Completed:
        """The batch with its items decoded, or a Completed when they cannot be
        (or it was delivered too many times)."""
        failed = self._decode_items(batch)
        if failed is not None:
            return failed
        delivery, entry = batch.delivery, batch.entry
        if delivery.deliveries > self.max_deliveries:
            where, extra = _where(delivery)
            reason = (
                f"job {entry.job_id} batch {entry.index}: delivered {delivery.deliveries} times, "
                f"more than max_deliveries={self.max_deliveries} (nodes running it died or were "
                "cut off)"
            )
            log.warning("%s: dead-lettered: %s", where, reason, extra=extra)
            return self.recorder.fail_batch(batch, "DeliveryLimit", reason, dead=True)
        return batch

    def _decode_items(self, batch: Batch) -> Completed | None:
        """Decode the batch's items into ``batch.items``; a Completed failing them
        when the payload cannot be decoded."""
        entry = batch.entry
        where, extra = _where(batch.delivery)
        try:
            items = get_codec(entry.codec).loads(entry.payload)
            if not isinstance(items, list) or len(items) != entry.count:
                raise ProtocolError(
                    f"payload holds {_describe(items)}, expected {entry.count} items"
                )
        except BaseException as exc:  # a bad payload fails its items, never the node
            # (unpickling runs the payload's code: it may raise SystemExit, or an
            # exception whose __str__ raises)
            reason = (
                f"job {entry.job_id} batch {entry.index}: cannot decode the batch: {brief(exc)}"
            )
            log.warning("%s: dead-lettered: %s", where, reason, extra=extra)
            return self.recorder.fail_batch(batch, "BadBatch", reason, dead=True)
        batch.items = items
        return None

    def _verdict(self, delivery: Delivery, entry: BatchEntry) -> tuple[str, str] | None:
        """Whether this node can run the batch's function (``worker.core.unrunnable``):
        None, or (error type, "") to hand it back, or (error type, why) to fail it."""
        not_allowed = self.guard.not_allowed(entry.fn_ref, entry.wrap)
        if not_allowed is not None and not self.unrunnable.note(
            entry.fn_ref, "FunctionNotAllowed", not_allowed, delivery.queue.name
        ):
            return "FunctionNotAllowed", not_allowed  # past MAX_TRACKED: fail it now
        return self.unrunnable.verdict(delivery.queue.name, entry.fn_ref)

    def _reject_malformed(
        self, delivery: Delivery, where: str, exc: ProtocolError, started: float
    ) -> Completed:
        """Dead-letter an entry that does not parse. When only its task options
        are wrong (out of bounds, ``taskfan.bounds``), the rest names its job and
        batch: its items are recorded as failed (``BadOptions``), so its job ends."""
        assert delivery.fields is not None
        log.warning("%s: dead-lettered: %s", where, exc, extra=_named(delivery))
        entry: BatchEntry | None = None
        if b"o" in delivery.fields and not delivery.skip:
            without = {k: v for k, v in delivery.fields.items() if k != b"o"}
            try:
                entry = BatchEntry.parse(without, where)
            except ProtocolError:
                entry = None
        if entry is None:
            return Completed.dead_letter(delivery, str(exc))
        batch = Batch(delivery, entry, [], started, remaining=entry.count)
        return self.recorder.fail_batch(batch, "BadOptions", str(exc), dead=True)

    def _reject_unverified(
        self, delivery: Delivery, where: str, reason: str, started: float
    ) -> Completed:
        """Dead-letter an unsigned or changed entry; record its items as failed,
        unsigned, when it names a job that exists (see worker.core.entry_checks)."""
        assert delivery.fields is not None
        message = f"{where}: {reason}"  # ``where`` names the job and batch it claims
        try:
            entry: BatchEntry | None = BatchEntry.parse(delivery.fields, where)
        except ProtocolError:
            entry = None
        log.warning("%s: dead-lettered: %s", where, reason, extra=_named(delivery))
        if entry is None or delivery.skip:
            return Completed.dead_letter(delivery, message)
        batch = Batch(delivery, entry, [], started, remaining=entry.count)
        return self.recorder.fail_batch(batch, "BadSignature", message, dead=True, signed=False)


def _where(delivery: Delivery) -> tuple[str, dict[str, Any]]:
    """The entry named for messages, and the job and batch it names for log lines."""
    where = f"queue {delivery.queue.name} entry {delivery.entry_id.decode()}"
    extra = _named(delivery)
    if extra:
        where += f" (job {extra['job']} batch {extra['batch']})"
    return where, extra


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
