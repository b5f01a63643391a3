"""A job on the cluster: a handle to follow it, wait for it, cancel or retry it,
and read its results.

The handle holds no state beyond the job's id and the codec it was enqueued
with (when known): everything else is read from Redis, so any process can
reattach with ``Client.job(id)``. Waits block on the job's
events stream (``producer.events``); results are read by ``producer.reader``,
retries are sent by ``producer.retry``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any, NamedTuple

from producer import lease, reader, retry
from producer.events import Events
from producer.handle import JobClient
from producer.listeners import NobodyWatch
from taskfan import scripts
from taskfan.connection import translate_errors
from taskfan.errors import BrokerUnavailable, JobCancelled, JobNotFound, TaskfanError, job_ended
from taskfan.keys import JobKeys
from taskfan.meta import JobMeta, JobState
from taskfan.outcomes import Outcome

_STOPPED = (JobState.CANCELLED.value.encode(), JobState.ABANDONED.value.encode())


class Progress(NamedTuple):
    done: int  #: items finished, successfully or not
    failed: int  #: of those, items that failed
    total: int | None  #: items in the job; None while it is still being enqueued


class Job:
    """A handle on a job: reattach from any process with ``Client.job(id)``."""

    def __init__(
        self, client: JobClient, job_id: str, codec: str | None = None, fn_ref: str | None = None
    ) -> None:
        self.client = client
        self.id = job_id
        #: the codec the job was enqueued with; None when reattached without it.
        #: Results are read with it, whatever the meta in Redis says.
        self.codec = codec
        #: the function the job runs, when this handle enqueued it (``Client.map``):
        #: its results reader then reads the meta with the first events, in one
        #: round trip (``producer.reader``), the job being known to exist
        self.fn_ref = fn_ref
        self.keys = JobKeys(job_id)
        self._redis: Any = client.redis

    def __repr__(self) -> str:
        return f"<Job {self.id}>"

    def meta(self) -> JobMeta:
        """The job's meta; a job whose enqueue lease lapsed is ended as abandoned
        first (``producer.lease``)."""
        return self.meta_from(self._raw_meta())

    def meta_from(self, raw: dict[bytes, bytes]) -> JobMeta:
        """``meta`` of a meta hash read already (``raw``, not empty)."""
        meta = self._parse(raw)
        with translate_errors(f"reading job {self.id}"):
            return lease.settle(self._redis, meta, lambda: self._parse(self._raw_meta()))

    def _parse(self, raw: dict[bytes, bytes]) -> JobMeta:
        """The meta hash parsed; with a keyring, verified first: SignatureError
        naming the job and the field when a signed value was changed (its
        function, codec, nonce, sealed totals or retry rounds; docs/security.md)."""
        keyring = self.client.keyring
        if keyring is not None:
            keyring.verify_job(self.id, raw)
        return JobMeta.parse(self.id, raw)

    def _raw_meta(self) -> dict[bytes, bytes]:
        with translate_errors(f"reading job {self.id}"):
            raw = self._redis.hgetall(self.keys.meta)
        if not raw:
            raise JobNotFound(self.id)
        return dict(raw)

    @property
    def status(self) -> str:
        """enqueuing, queued, running, finished, cancelled or abandoned."""
        return self.meta().status

    def progress(self) -> Progress:
        meta = self.meta()
        return Progress(meta.done, meta.failed, meta.total if meta.sealed else None)

    # ----------------------------------------------------------------- life

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every item has an outcome; False if ``timeout`` passed first.

        Raises JobCancelled if the job is (or gets) cancelled, JobAbandoned (a
        JobCancelled) if its producer died before sending every batch; either
        says how many items are done, failed and cancelled (``done``,
        ``failed``, ``cancelled``: the items with no outcome, which
        ``outcomes()`` gives as cancelled). Logs one
        warning when no live node has served the job's queue for a few seconds.
        """
        events = Events(self._redis, self.keys, timeout)
        with translate_errors(f"waiting for job {self.id}"):
            try:  # a wait that starts during an outage rides it out too
                (state, queue), last = events.call("checking", self._state_and_last_event)
            except FuturesTimeout:
                return False
            if state is None:
                raise JobNotFound(self.id)
            if state == JobState.FINISHED.value.encode():
                return True
            if last:
                events.last = last[0][0]
            if state in _STOPPED:
                raise self._ended(state.decode())
            if state == b"active":
                # Ends it first when its enqueue lease lapsed; during an outage,
                # nodes (at their heartbeat) or a later look will do it instead.
                with contextlib.suppress(BrokerUnavailable):
                    self.meta()
            if queue is not None:  # warn when no live node serves its queue
                events.nobody = NobodyWatch(self._redis, queue.decode(), self.id)
            try:
                while True:
                    for fields in events.read():
                        if fields.get(b"end") in _STOPPED:
                            raise self._ended(fields[b"end"].decode())
                        if b"end" in fields:
                            return True
            except FuturesTimeout:
                return False

    def _ended(self, state: str) -> JobCancelled:
        """The error for the job that ended ``state``, with its counts: items
        done, failed, and cancelled (with no outcome; they read as cancelled)."""
        try:
            return job_ended(self.id, state, self.meta().counts)
        except TaskfanError:  # gone meanwhile, Redis away: without the counts
            return job_ended(self.id, state)

    def _state_and_last_event(self) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(self.keys.meta, "state", "queue")
        pipe.xrevrange(self.keys.events, count=1)
        return list(pipe.execute())

    def cancel(self, terminate: bool = False) -> bool:
        """Cancel the job: queued batches are skipped, waiters get JobCancelled.

        Returns False when the job had already ended. Items already running
        finish, but their results are not recorded; with ``terminate``, the
        nodes kill the pool processes running them instead, at their next
        heartbeat (docs/reliability.md, "Hard cancel"). ``terminate`` on a job
        cancelled before makes that cancel a hard one (and returns False).
        """
        with translate_errors(f"cancelling job {self.id}"):
            code = scripts.cancel_job(self._redis, self.keys, time.time(), terminate)
        if code == scripts.JOB_GONE:
            raise JobNotFound(self.id)
        return bool(code == 1)

    def retry_failed(self) -> int:
        """Run the failed items of a finished job again, in place; returns how many.

        The job becomes active again until the retries are recorded; their
        outcomes then replace the failures (``results``, ``outcomes``), and
        ``attempts`` counts every run. Items whose input was never decoded (a
        batch that could not be read) cannot run again and stay failed.
        """
        return retry.retry_failed(self, self._raw_meta())

    # ----------------------------------------------------------------- results

    def outcomes(self, timeout: float | None = None) -> Iterator[Outcome]:
        """Every item's outcome in input order, as soon as its batch is recorded.

        Of a job cancelled or abandoned, the items with no recorded outcome (never
        run, let go, killed by a hard cancel) come as cancelled outcomes
        (``Outcome.cancelled``, a ``CancelledError``); the others keep theirs."""
        return reader.outcomes(self, timeout)

    def results(self, timeout: float | None = None) -> Iterator[Any]:
        """Values in input order; raises TaskFailed at the first failed item,
        JobCancelled at the first cancelled one."""
        return reader.values(self, timeout)

    def errors(self, timeout: float | None = None) -> Iterator[Outcome]:
        """The outcomes of failed items, in input order."""
        return (o for o in self.outcomes(timeout) if not o.ok)

    def as_completed(self, timeout: float | None = None) -> Iterator[Outcome]:
        """Outcomes in the order their batches were recorded.

        After a retry round, a retried item comes again with its new outcome.
        """
        return reader.as_completed(self, timeout)
