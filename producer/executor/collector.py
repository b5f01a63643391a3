"""The submit side's futures: a thread that reads the events stream of the job
an ``Executor``'s submit calls share, and settles their futures.

Calls share batches (``producer.executor.submitter``; a call's item index is its
index in the job): a node taking a batch marks its calls' futures running
("s=<batch>" events), a batch's results settle its calls' futures, a batch that
cannot be read fails its own calls and no others, and a job that ended
(cancelled, abandoned) or an error reading fails every pending one: no future
stays pending for good. The results fields of the batches it waits for, and
of the next few to be sent (a read blocks while calls are submitted), are read
in the pipeline of each events read (``Events.read``'s ``prefetch``): a batch's
results come back in the round trip that brings its event.
"""

from __future__ import annotations

import itertools
import threading
import time

from producer.client import Client
from producer.events import Events, scan
from producer.executor.coalesce import Call, Sent, forget
from producer.executor.futures import CallFuture, raise_original
from producer.job import Job
from producer.reader import FETCH, fetch
from producer.records import JobRecords
from taskfan.boundary import message, type_name
from taskfan.errors import JobNotFound, ProtocolError, TaskfanError, job_ended
from taskfan.outcomes import Outcome, iter_outcomes
from taskfan.transient import AWAY, Backoff

#: batches not sent yet whose results each events read asks for too
AHEAD = 4


class Collector:
    """Mixed into ``Executor``: the collector thread's body (``_collect``), which
    settles submit futures under the executor's lock."""

    client: Client
    _lock: threading.Lock
    _shutdown: bool
    _job: Job | None
    #: writes the shared job's records (producer.records)
    _records: JobRecords | None
    #: the futures of submitted calls not yet settled, by call index
    _futures: dict[int, CallFuture]
    #: the batches sent and not yet settled, by batch index
    _batches: dict[int, Sent]
    _open: dict[Call, None]
    _sending: int
    #: batches sent so far: the next one sent takes this index
    _batch_count: int

    def _collect(self) -> None:
        assert self._job is not None
        job = self._job
        events = Events(self.client.redis, job.keys, None, self.client.queue)
        backoff = Backoff()
        while True:
            with self._lock:  # (done() takes the future's lock: not under ours)
                shutdown, pending = self._shutdown, list(self._futures.values())
                shutdown = shutdown and not self._open and not self._sending
                # the oldest batches not settled, and the next to be sent (a read
                # blocks across them): their results ride with the events
                ahead = range(self._batch_count, self._batch_count + AHEAD)
                waiting = [str(i) for i in itertools.islice(self._batches, FETCH - AHEAD)]
                waiting += map(str, ahead)
            if shutdown and all(f.done() for f in pending):
                return
            try:
                fresh = events.read(waiting)
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
                batch = self._batches.get(int(index))
                if batch is None:
                    continue
                batch.started = started is not None
                futures = [self._futures.get(call.index) for call in batch.calls]
            for future in futures:
                if future is None:
                    continue
                if started is not None:
                    future.start()
                else:
                    future.unstart()

    def _settle_batches(self, job: Job, fields: list[str], events: Events) -> None:
        """Settle the futures of these batches; a batch that cannot be read (a
        bad signature, a broken entry) fails its own calls and no others."""
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
            if field.isdigit():
                with self._lock:
                    forget(self._batches.pop(int(field), None))

    def _fail_one(self, field: int, exc: BaseException) -> None:
        """Fail the calls of batch ``field``."""
        with self._lock:
            batch = self._batches.pop(field, None)
            calls = [] if batch is None else batch.calls
            failing = [self._futures.pop(call.index, None) for call in calls]
            forget(batch)
        for future in failing:
            if future is not None and future.start():
                future.take_back = None  # (it holds its call, and the call holds it)
                future.set_exception(exc)

    def _settle(self, job_id: str, outcome: Outcome) -> None:
        with self._lock:
            future = self._futures.pop(outcome.index, None)
        if future is None or not future.start():
            return
        future.take_back = None  # (it holds its call, and the call holds it)
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
                future.take_back = None
                future.set_exception(exc)
