"""The submit side's futures: a thread that reads the events stream of the job
an ``Executor``'s submit calls share, and settles their futures.

Each submit is a batch of its own (batch index = item index): a node taking it
marks its future running ("s=<batch>" events), a result settles it, a batch
that cannot be read fails its own future and no other, and a job that ended
(cancelled, abandoned) or an error reading fails every pending one: no future
stays pending for good. A future cancelled before any node took its call
takes the call back (``_take_back``).
"""

from __future__ import annotations

import threading
import time

from producer.client import Client
from producer.events import Events, scan
from producer.executor.futures import CallFuture, raise_original
from producer.job import Job
from producer.reader import FETCH, fetch
from producer.records import JobRecords
from taskfan import scripts
from taskfan.boundary import message, type_name
from taskfan.connection import translate_errors
from taskfan.errors import JobNotFound, ProtocolError, TaskfanError, job_ended
from taskfan.keys import QueueKeys
from taskfan.outcomes import Outcome, encode_result, iter_outcomes
from taskfan.transient import AWAY, Backoff


class Collector:
    """Mixed into ``Executor``: the bookkeeping of submit futures, under the
    executor's lock: taking a call back, and the collector thread's body
    (``_collect``) that settles them."""

    client: Client
    _lock: threading.Lock
    _shutdown: bool
    _job: Job | None
    #: writes the shared job's records (producer.records)
    _records: JobRecords | None
    #: the futures of submitted calls not yet settled, by call index
    _futures: dict[int, CallFuture]

    #: what a call cancelled before any node took it is recorded as
    CANCELLED_ERROR = [0, "CancelledError", "cancelled before any node took it", "", None]

    def _take_back(self, index: int, entry_id: bytes) -> bool:
        """Delete call ``index`` from the queue if no node took it yet, and
        record it as cancelled, so that the job still completes; False if a node
        has it (``CallFuture.cancel``)."""
        client, job = self.client, self._job
        assert job is not None
        with translate_errors(f"cancelling call {index} of job {job.id}"):
            if not scripts.cancel_call(client.redis, QueueKeys(client.queue), entry_id):
                return False
            with self._lock:
                self._futures.pop(index, None)
            blob = client.codec.dumps([[None], [self.CANCELLED_ERROR], []])
            records = self._records
            assert records is not None
            entry = records.result_entry(
                index, client.codec.name, encode_result(index, 1, 1, [blob])
            )
            records.record(client.redis, index, entry, 1, time.time())
        return True

    def _collect(self) -> None:
        assert self._job is not None
        job = self._job
        events = Events(self.client.redis, job.keys, None, self.client.queue)
        backoff = Backoff()
        while True:
            with self._lock:  # (done() takes the future's lock: not under ours)
                shutdown, pending = self._shutdown, list(self._futures.values())
            if shutdown and all(f.done() for f in pending):
                return
            try:
                fresh = events.read()
                self._mark_running(fresh)
                ready, _, stopped = scan(job.id, fresh, None)
                backoff.reset()
                for start in range(0, len(ready), FETCH):
                    self._settle_batches(job, ready[start : start + FETCH], events)
                if stopped:  # cancelled, or abandoned: no further result will come
                    self._fail_all(job_ended(job.id, stopped))
                    return
            except AWAY:
                time.sleep(backoff.next())  # Redis is away: try again; futures stay pending
            except (JobNotFound, TaskfanError) as exc:
                self._fail_all(exc)
                return
            except BaseException as exc:  # never leave futures pending for good
                text = f"{type_name(exc)}: {message(exc)}"
                self._fail_all(ProtocolError(f"job {job.id}: reading results failed: {text}"))
                return

    def _mark_running(self, events: list[dict[bytes, bytes]]) -> None:
        """A node took these calls ("s=<batch>" events, worker/sources/streams/
        batch_reads.py): their futures are running, and can no longer be
        cancelled; or handed them back unrun ("h=<batch>"): pending again, and
        cancel() may take them back."""
        for fields in events:
            started, handed = fields.get(b"s"), fields.get(b"h")
            index = started if started is not None else handed
            if index is None or not index.isdigit():
                continue
            with self._lock:
                future = self._futures.get(int(index))
            if future is None:
                continue
            if started is not None:
                future.start()
            else:
                future.unstart()

    def _settle_batches(self, job: Job, fields: list[str], events: Events) -> None:
        """Settle the futures of these batches. Each submit is a batch of its own
        (batch index = item index), so a batch that cannot be read (a bad
        signature, a broken entry) fails its own future and no other."""
        codec = self.client.codec
        try:
            entries = fetch(job, fields, codec.name, events)
        except ProtocolError as exc:
            if len(fields) == 1:
                self._fail_one(int(fields[0]), exc)
            else:
                for field in fields:
                    self._settle_batches(job, [field], events)
            return
        for field, entry in zip(fields, entries, strict=True):
            try:
                outcomes = list(iter_outcomes(entry, codec, f"job {job.id} batch {field}"))
            except ProtocolError as exc:
                self._fail_one(int(field), exc)
                continue
            for outcome in outcomes:
                self._settle(job.id, outcome)

    def _fail_one(self, index: int, exc: BaseException) -> None:
        with self._lock:
            future = self._futures.pop(index, None)
        if future is not None and future.start():
            future.set_exception(exc)

    def _settle(self, job_id: str, outcome: Outcome) -> None:
        with self._lock:
            future = self._futures.pop(outcome.index, None)
        if future is None or not future.start():
            return
        if outcome.error is None:
            future.set_result(outcome.value)
        else:
            future.set_exception(
                raise_original(outcome.error.to_task_failed(job_id, outcome.index))
            )

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            pending, self._futures = self._futures, {}
        for future in pending.values():
            if future.start():
                future.set_exception(exc)
