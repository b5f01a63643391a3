"""A job on the cluster: its progress, and its results read back from Redis.

Readers block on the job's events stream (XREAD BLOCK), never poll: each
recorded batch adds an event, so results stream out as soon as their batch is
recorded, in input order (``results``, ``outcomes``) or in completion order
(``as_completed``).

With a keyring, every result entry is verified before anything in it is
decoded: one that is unsigned, signed with an unknown key, or signed for
another job, batch or codec raises SignatureError naming the job and batch.
The reader cannot tell which items such an entry stands for (its start and
count are part of what cannot be trusted), so it stops there rather than guess;
see docs/security.md. Under ``no_pickle`` no job's results are read as pickle.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import TYPE_CHECKING, Any, NamedTuple

import redis
from redis.exceptions import ClusterError, TryAgainError

from taskfan import scripts, signing
from taskfan.connection import translate_errors
from taskfan.errors import JobCancelled, JobNotFound, LimitExceeded, ProtocolError, TaskfanError
from taskfan.keys import JobKeys, QueueKeys
from taskfan.limits import format_size
from taskfan.meta import JobMeta, JobState
from taskfan.outcomes import Outcome, ResultEntry, chunk_values, iter_outcomes, merged_outcomes
from taskfan.protocol import BatchEntry

if TYPE_CHECKING:
    from producer.client import Client

log = logging.getLogger(__name__)

#: longest single XREAD BLOCK; a waiter with no deadline simply blocks again
BLOCK_SLICE = 5.0
#: result entries fetched per HMGET
FETCH = 32


class Progress(NamedTuple):
    done: int  #: items finished, successfully or not
    failed: int  #: of those, items that failed
    total: int | None  #: items in the job; None while it is still being enqueued


class _Events:
    """Reads a job's events stream from the start, blocking until the deadline.

    Each batch's event is returned once. After a dropped connection the stream
    is read again from the start: across a failover the new master may hold
    events older than the last one seen on the old master (replication is
    asynchronous), which reading on from that id would skip.
    """

    def __init__(self, job: Job, timeout: float | None) -> None:
        self.job = job
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.last = b"0-0"
        #: the results fields of the batch events returned so far
        self.seen: set[bytes] = set()
        self._reread = False

    def remaining(self) -> float:
        """Seconds left to block; raises TimeoutError once the deadline passed."""
        slice_ = self.job._block_slice
        if self.deadline is None:
            return slice_
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise FuturesTimeout(f"job {self.job.id}: timed out waiting for results")
        return min(slice_, left)

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a Redis call, riding out outages (restarts, dropped connections,
        failovers) with backoff until the deadline: a waiter survives them."""
        delay = 0.1
        while True:
            try:
                return fn(*args, **kwargs)
            except (redis.ConnectionError, redis.TimeoutError, ClusterError, TryAgainError) as exc:
                self._reread = True
                log.warning(
                    "job %s: %s failed, retrying in %.1fs: %s", self.job.id, what, delay, exc
                )
                time.sleep(min(delay, self.remaining()))
                delay = min(5.0, delay * 2)

    def read(self) -> list[dict[bytes, bytes]]:
        """The next events; raises TimeoutError once the deadline passes."""
        redis_client = self.job._redis
        while True:
            if self._reread:
                self.last, self._reread = b"0-0", False
            block = self.remaining()
            stream = {self.job.keys.events: self.last}
            events = self.call(
                "reading events",
                redis_client.xread,
                stream,
                count=1000,
                block=max(1, int(block * 1000)),
            )
            if events:
                entries = events[0][1]
                self.last = entries[-1][0]
                fresh = [fields for _, fields in entries if self._fresh(fields)]
                if fresh:
                    return fresh
                continue
            if self.deadline is None and not self.call(
                "checking", redis_client.exists, self.job.keys.meta
            ):
                raise JobNotFound(self.job.id)

    def _fresh(self, fields: dict[bytes, bytes]) -> bool:
        field = fields.get(b"b")
        if field is None:
            return True
        if field in self.seen:
            return False
        self.seen.add(field)
        return True


class Job:
    """A handle on a job: reattach from any process with ``Client.job(id)``."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client = client
        self.id = job_id
        self.keys = JobKeys(job_id)
        self._redis: Any = client.redis
        # Block for less than the client's socket timeout (redis-py 8 defaults
        # it to 5 s), or every long wait would end in a timeout error.
        pool = getattr(self._redis, "connection_pool", None)
        socket_timeout = getattr(pool, "connection_kwargs", {}).get("socket_timeout")
        self._block_slice = BLOCK_SLICE
        if socket_timeout:
            self._block_slice = max(0.1, min(BLOCK_SLICE, socket_timeout - 1.0))

    def __repr__(self) -> str:
        return f"<Job {self.id}>"

    def meta(self) -> JobMeta:
        return JobMeta.parse(self.id, self._raw_meta())

    def _raw_meta(self) -> dict[bytes, bytes]:
        with translate_errors(f"reading job {self.id}"):
            raw = self._redis.hgetall(self.keys.meta)
        if not raw:
            raise JobNotFound(self.id)
        return dict(raw)

    @property
    def status(self) -> str:
        """enqueuing, queued, running, finished or cancelled."""
        return self.meta().status

    def progress(self) -> Progress:
        meta = self.meta()
        return Progress(meta.done, meta.failed, meta.total if meta.sealed else None)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every item has an outcome; False if ``timeout`` passed first.

        Raises JobCancelled if the job is (or gets) cancelled.
        """
        events = _Events(self, timeout)
        with translate_errors(f"waiting for job {self.id}"):
            pipe = self._redis.pipeline(transaction=False)
            pipe.hget(self.keys.meta, "state")
            pipe.xrevrange(self.keys.events, count=1)
            state, last = pipe.execute()
            if state is None:
                raise JobNotFound(self.id)
            if state == JobState.FINISHED.value.encode():
                return True
            if last:
                events.last = last[0][0]
            if state == JobState.CANCELLED.value.encode():
                raise JobCancelled(self.id)
            try:
                while True:
                    for fields in events.read():
                        if fields.get(b"end") == JobState.CANCELLED.value.encode():
                            raise JobCancelled(self.id)
                        if b"end" in fields:
                            return True
            except FuturesTimeout:
                return False

    def cancel(self) -> bool:
        """Cancel the job: queued batches are skipped, waiters get JobCancelled.

        Returns False when the job had already ended. Items already running
        finish, but their results are not recorded.
        """
        with translate_errors(f"cancelling job {self.id}"):
            code = scripts.cancel_job(self._redis, self.keys, time.time())
        if code == scripts.JOB_GONE:
            raise JobNotFound(self.id)
        return bool(code == 1)

    def outcomes(self, timeout: float | None = None) -> Iterator[Outcome]:
        """Every item's outcome in input order, as soon as its batch is recorded."""
        for entries, codec in self._entries_in_order(timeout):
            yield from merged_outcomes(entries, codec, f"job {self.id}")

    def results(self, timeout: float | None = None) -> Iterator[Any]:
        """Values in input order; raises TaskFailed at the first failed item."""
        for entries, codec in self._entries_in_order(timeout):
            if len(entries) == 1 and entries[0].failed == 0:
                where = f"job {self.id}"
                values = [chunk_values(blob, codec, where) for blob in entries[0].blobs]
                if sum(map(len, values)) == entries[0].count:
                    for chunk in values:  # fast path: no Outcome per item
                        yield from chunk
                    continue
            for outcome in merged_outcomes(entries, codec, f"job {self.id}"):
                if outcome.error is not None:
                    raise outcome.error.to_task_failed(self.id, outcome.index)
                yield outcome.value

    def errors(self, timeout: float | None = None) -> Iterator[Outcome]:
        """The outcomes of failed items, in input order."""
        return (o for o in self.outcomes(timeout) if not o.ok)

    def as_completed(self, timeout: float | None = None) -> Iterator[Outcome]:
        """Outcomes in the order their batches were recorded.

        After a retry round, a retried item comes again with its new outcome.
        """
        meta = self.meta()
        codec = self.client.result_codec(self.id, meta.codec)
        batches = meta.batches if meta.sealed else None
        overlays = sum(len(fields) for fields in meta.overlays.values())
        seen = 0
        events = _Events(self, timeout)
        while batches is None or seen < batches + overlays:
            with translate_errors(f"waiting for results of job {self.id}"):
                ready, batches, cancelled = self._scan(events.read(), batches)
            for start in range(0, len(ready), FETCH):
                for entry in self._fetch(ready[start : start + FETCH], codec.name, events):
                    yield from iter_outcomes(entry, codec, f"job {self.id}")
            seen += len(ready)
            if cancelled:
                raise JobCancelled(self.id)

    def retry_failed(self) -> int:
        """Run the failed items of a finished job again, in place; returns how many.

        The job becomes active again until the retries are recorded; their
        outcomes then replace the failures (``results``, ``outcomes``), and
        ``attempts`` counts every run. Items whose input was never decoded (a
        batch that could not be read) cannot run again and stay failed.
        """
        raw = self._raw_meta()
        meta = JobMeta.parse(self.id, raw)
        keyring = self.client.keyring
        if keyring is not None:
            keyring.verify_meta(raw, f"job {self.id}")
        if meta.state is not JobState.FINISHED:
            raise TaskfanError(
                f"job {self.id} is {meta.status}: only a finished job can be retried"
            )
        if meta.fn_ref == "*":
            raise TaskfanError(
                f"job {self.id} holds Executor.submit calls, which cannot be retried"
            )
        plans: list[BatchEntry] = []
        left = 0
        codec = self.client.result_codec(self.id, meta.codec)
        for index, (entries, _) in enumerate(self._entries_in_order(None)):
            failed = [o for o in merged_outcomes(entries, codec, f"job {self.id}") if not o.ok]
            kept = [o for o in failed if o.error is not None and o.error.retry_input is not None]
            left += len(failed) - len(kept)
            if kept:
                start = entries[0].start
                plans.append(
                    BatchEntry(
                        job_id=self.id,
                        index=index,
                        start=start,
                        count=len(kept),
                        fn_ref=meta.fn_ref,
                        codec=meta.codec,
                        mode=meta.mode,
                        chunksize=meta.chunksize,
                        payload=codec.dumps([_input_of(o) for o in kept]),
                        options=meta.options,
                        offsets=tuple(o.index - start for o in kept),
                    )
                )
        if left:
            log.warning(
                "job %s: %d failed items kept no input and cannot be retried", self.id, left
            )
        if not plans:
            return 0
        items = sum(p.count for p in plans)
        limit = self.client.limits.max_batch_bytes
        for plan in plans:
            if len(plan.payload) > limit:
                raise LimitExceeded(
                    f"job {self.id} batch {plan.index}: its failed items encode to "
                    f"{format_size(len(plan.payload))}, over max_batch_bytes "
                    f"({format_size(limit)})"
                )
        with translate_errors(f"retrying job {self.id}"):
            batches = json.dumps([p.index for p in plans])
            round_ = scripts.open_retry_round(self._redis, self.keys, items, len(plans), batches)
            if round_ <= 0:
                raise TaskfanError(f"job {self.id} changed meanwhile: it is {self.status}")
            pipe = self._redis.pipeline(transaction=False)
            for plan in plans:
                fields = dataclasses.replace(plan, round=round_).fields()
                if keyring is not None:
                    fields = keyring.sign_batch(meta.queue, fields)
                pipe.xadd(QueueKeys(meta.queue).stream, fields)
            pipe.execute()
        return items

    # ----------------------------------------------------------------- internals

    def _scan(
        self, events: Iterable[dict[bytes, bytes]], batches: int | None
    ) -> tuple[list[str], int | None, bool]:
        """Recorded results fields, the job's batch count once sealed, and whether
        the job was cancelled (no further batch will come)."""
        ready: list[str] = []
        cancelled = False
        for fields in events:
            try:
                if b"b" in fields:
                    ready.append(fields[b"b"].decode("ascii"))
                elif b"sealed" in fields:
                    batches = int(fields[b"sealed"])
                elif fields.get(b"end") == JobState.CANCELLED.value.encode():
                    cancelled = True
            except ValueError:  # UnicodeDecodeError too
                raise ProtocolError(
                    f"job {self.id}: its events stream holds an entry that is not taskfan's: "
                    f"{fields!r:.200}"
                ) from None
        return ready, batches, cancelled

    def _fetch(
        self, indexes: list[Any], codec: str, events: _Events | None = None
    ) -> list[ResultEntry]:
        """Result entries of these results fields (batch indexes, or "<index>.<round>"),
        verified with the client's keyring when it has one."""
        if events is not None:
            raw = events.call("reading results", self._redis.hmget, self.keys.results, indexes)
        else:
            with translate_errors(f"reading results of job {self.id}"):
                raw = self._redis.hmget(self.keys.results, indexes)
        entries = []
        for index, data in zip(indexes, raw, strict=True):
            where = f"job {self.id} batch {index}"
            if data is None:
                raise ProtocolError(f"{where}: result missing (expired or deleted?)")
            data = signing.open_result(self.client.keyring, data, self.id, index, codec, where)
            entries.append(ResultEntry.parse(data, where))
        return entries

    def _entries_in_order(self, timeout: float | None) -> Iterator[tuple[list[ResultEntry], Any]]:
        """Per batch, in order: its result entry and its retries' (overlays), once
        all of them are recorded."""
        meta = self.meta()
        codec = self.client.result_codec(self.id, meta.codec)
        batches = meta.batches if meta.sealed else None
        events = _Events(self, timeout)
        recorded: set[str] = set()
        next_index = 0
        cancelled = False

        def fields_of(index: int) -> list[str]:
            return [str(index), *meta.overlays.get(index, ())]

        while batches is None or next_index < batches:
            run: list[int] = []
            while len(run) < FETCH and (batches is None or next_index + len(run) < batches):
                if not all(f in recorded for f in fields_of(next_index + len(run))):
                    break
                run.append(next_index + len(run))
            if not run:
                if cancelled:
                    raise JobCancelled(self.id)
                with translate_errors(f"waiting for results of job {self.id}"):
                    found, batches, cancelled = self._scan(events.read(), batches)
                recorded.update(found)
                continue
            wanted = [f for index in run for f in fields_of(index)]
            entries = iter(self._fetch(wanted, codec.name, events))
            for index in run:
                yield [next(entries) for _ in fields_of(index)], codec
            recorded.difference_update(wanted)
            next_index += len(run)


def _input_of(outcome: Outcome) -> Any:
    assert outcome.error is not None and outcome.error.retry_input is not None
    return outcome.error.retry_input[0]
