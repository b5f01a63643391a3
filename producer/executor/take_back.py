"""Taking ``Executor.submit`` calls back (``Future.cancel``), and what is
recorded in place of calls that never run.

A call still buffered is dropped; a call in a batch no node took is taken back
with its whole batch (``cancel_call.lua``, atomic against the nodes' reads),
recorded as cancelled in that batch's place, and the batch's other calls go
back to the buffer, to be sent again around the gap; a call whose batch a node
took cannot be taken back. Take-backs run one at a time, so a second call of a
batch taken back waits for the first to finish. Batches counted in the job's
size but never sent (``_unsent``) are recorded as failed the same way, so the
job still completes.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from producer.client import Client
from producer.executor.coalesce import (
    OPEN,
    QUEUED,
    SENDING,
    TAKEN_BACK,
    Call,
    Sent,
    forget,
    set_state,
)
from producer.executor.futures import CallFuture
from producer.records import JobRecords
from taskfan import scripts
from taskfan.connection import translate_errors
from taskfan.keys import QueueKeys
from taskfan.outcomes import encode_result


class TakeBacks:
    """Mixed into ``Submitter``: its state, under ``_cond``, is declared here."""

    client: Client
    _cond: threading.Condition
    _take_backs: threading.Lock
    _open: dict[Call, None]
    _sending: int
    _futures: dict[int, CallFuture]
    #: writes the shared job's meta, counters and entries (producer.records)
    _records: JobRecords | None
    #: the batches sent and not yet known taken, by batch index
    _batches: dict[int, Sent]
    #: batches counted in the job's size whose write or encoding failed:
    #: (batch, first call, calls, error) to record as failed before sealing
    _unsent: list[tuple[int, int, int, list[Any]]]

    CANCELLED_ERROR = [0, "CancelledError", "cancelled before any node took it", "", None]

    def _wake_sender(self) -> None:  # pragma: no cover - Submitter's
        raise NotImplementedError

    def _take_back(self, call: Call) -> bool:
        """Take ``call`` back before any node takes it: True if it will never run."""
        with self._take_backs:
            with self._cond:
                while call.state == SENDING:
                    self._cond.wait()
                if call.state == OPEN:
                    del self._open[call]
                    call.state = TAKEN_BACK
                    return True
                batch = call.batch
                if call.state != QUEUED or batch is None:
                    return call.state == TAKEN_BACK
            # (a batch a node took may have been handed back unrun: Redis says)
            if not self._delete(batch):
                return False
            with self._cond:
                others = [other for other in batch.calls if other is not call]
                for other in others:
                    other.state, other.batch = OPEN, None
                    self._open[other] = None
                call.state = TAKEN_BACK
                self._futures.pop(call.index, None)
                forget(batch)
                self._wake_sender()
                # Sent again before this batch is recorded: a sealed job must
                # not finish (all of its batches recorded) before they are.
                while any(other.state in (OPEN, SENDING) for other in others):
                    self._cond.wait()
            self._record_in_place(batch.index, call.index, 1)
        return True

    def _take_back_all(self) -> None:
        """``shutdown(cancel_futures=True)``: cancel every call no node took,
        a whole batch per script call."""
        cancelled: list[Call] = []
        with self._take_backs:
            with self._cond:
                cancelled += self._open  # never sent: dropped at once
                self._open.clear()
                set_state(cancelled, TAKEN_BACK)
                while self._sending:  # (then every batch sent has its entry id)
                    self._cond.wait()
                queued = list(self._batches.values())  # (started: maybe handed back)
            for batch in queued:
                if batch.entry_id is None or not self._delete(batch):
                    continue
                with self._cond:
                    for call in batch.calls:
                        call.state = TAKEN_BACK
                        self._futures.pop(call.index, None)
                self._record_in_place(batch.index, batch.calls[0].index, len(batch.calls))
                cancelled += batch.calls
                forget(batch)
        for call in cancelled:  # (not under _take_backs: a cancel() holds its future first)
            call.future.cancel_taken_back()

    def _delete(self, batch: Sent) -> bool:
        """Delete the batch's entry if no node read it (then none of its calls runs)."""
        assert batch.entry_id is not None
        queue = QueueKeys(self.client.queue)
        with translate_errors(f"cancelling batch {batch.index} of the executor's job"):
            deleted = scripts.cancel_call(self.client.redis, queue, batch.entry_id)
        with self._cond:
            if deleted:
                self._batches.pop(batch.index, None)
            else:
                batch.started = True  # a node has it: its calls run
        return deleted

    def _record_unsent(self) -> None:
        """Record the batches that were counted but never sent as failed, so
        that the job still completes (their futures failed already)."""
        with self._cond:
            unsent, self._unsent = self._unsent, []
        for field, start, count, failure in unsent:
            self._record_in_place(field, start, count, failure)

    def _record_in_place(
        self, field: int, start: int, count: int, failure: list[Any] | None = None
    ) -> None:
        """Record calls ``start``.. as cancelled (or failed with ``failure``: type,
        message, traceback, cause) in batch ``field``'s place, so that the job
        still completes."""
        client, records = self.client, self._records
        assert records is not None
        failure = failure or self.CANCELLED_ERROR[1:]
        errors = [[i, *failure] for i in range(count)]
        blob = client.codec.dumps([[None] * count, errors, []])
        entry = records.result_entry(
            field, client.codec.name, encode_result(start, count, count, [blob])
        )
        with translate_errors(f"cancelling calls of job {records.id}"):
            records.record(client.redis, field, entry, count, time.time())
