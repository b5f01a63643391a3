"""Sending ``Executor.submit`` calls in shared batches, and sealing their job.

``submit`` only encodes its call (to raise what the stdlib raises) and adds it
to the open buffer. One thread per executor, the submitter, sends: it takes
everything buffered, cuts it into batches (``producer.executor.coalesce``) and writes
them in one pipeline; calls submitted while it sends wait for the next round
("group commit"). So a lone call leaves at once, and a burst fills batches as
large as the sending takes time, with no timer to wait out.

Taking calls back (``Future.cancel``) and what is recorded in place of calls
that never run: ``producer.executor.take_back``.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

import redis

from producer.client import Client
from producer.executor.coalesce import (
    GONE,
    QUEUED,
    SENDING,
    Call,
    Sent,
    calls_per_batch,
    cut,
    forget,
    set_state,
)  # fmt: skip
from producer.executor.futures import CallFuture
from producer.executor.take_back import TakeBacks
from producer.job import Job
from producer.lease import LeaseKeeper
from taskfan import keys
from taskfan.boundary import brief
from taskfan.connection import translate_errors
from taskfan.cost import parse_cost
from taskfan.errors import TaskfanError
from taskfan.options import CallMode
from taskfan.pipelines import Sequenced
from taskfan.protocol import BatchEntry

#: seconds a function's published cost is used before it is read again
COST_FRESH = 1.0


class Submitter(TakeBacks):
    """Mixed into ``Executor``: the open buffer, the submitter thread; take-backs
    and what is recorded in place of calls that never run (``TakeBacks``).

    Under ``_cond`` (on the executor's lock): the buffer, every call's state,
    the call and batch counters and the futures by call index."""

    client: Client
    _lock: threading.Lock
    _shutdown: bool
    _job: Job | None
    _count: int
    _nonce: str
    _futures: dict[int, CallFuture]
    _init: tuple[str, bytes]
    _keeper: LeaseKeeper | None

    def _init_submitter(self) -> None:
        self._cond = threading.Condition(self._lock)
        self._open: dict[Call, None] = {}  #: calls to send, in submit order
        self._sending = 0  #: calls being sent now
        self._batch_count = 0
        self._batches = {}
        self._costs: dict[str, tuple[float, float | None]] = {}
        self._sender_running = False
        self._sealed = False
        self._take_backs = threading.Lock()
        self._unsent = []

    def _buffer(self, call: Call) -> bool:
        """(Under ``_cond``.) Add a call to the open buffer, for the submitter
        thread to send; or, when nothing else is buffered, being sent or waited
        for (the first call, or one ``submit(...).result()`` after another),
        have the caller send it at once (True: call ``_send_round([call])``), as
        ``submit`` did before calls shared batches: it spares the hand-off to the
        thread and back, and the call is on its way when ``submit`` returns."""
        if not (self._open or self._sending or self._futures):
            call.state = SENDING
            self._sending += 1
            return True
        self._open[call] = None
        self._wake_sender()
        return False

    def _wake_sender(self) -> None:
        """(Under ``_cond``.) The submitter thread runs, and sees the buffer."""
        if not self._sender_running:
            self._sender_running = True
            threading.Thread(target=self._send_loop, name="taskfan-submit", daemon=True).start()
        self._cond.notify_all()

    # ------------------------------------------------------------ sending

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                # (not while a caller's round opens the job: it would open another)
                while (not self._open and not self._shutdown) or (
                    self._job is None and self._sending
                ):
                    self._cond.wait()
                if not self._open:  # shut down, and nothing is left to send
                    self._sender_running = False
                    return
                calls = list(self._open)
                self._open.clear()
                set_state(calls, SENDING)
                self._sending += len(calls)
            self._send_round(calls)
            del calls  # (no reference to a call's arguments outlives its round)

    def _send_round(self, calls: list[Call]) -> None:
        """Cut ``calls`` into batches and send them; fail those that cannot be."""
        if len(calls) > 1:  # (one call is one batch, whatever its function's cost)
            self._read_costs({call.called.fn_ref for call in calls})
        with self._cond:
            batches, self._count = cut(calls, self._count, self._per_batch)
            sent = []
            for group in batches:
                batch = Sent(self._batch_count, group)
                self._batch_count += 1
                self._batches[batch.index] = batch
                for call in group:
                    call.batch = batch
                    self._futures[call.index] = call.future
                sent.append(batch)
        failed = self._send(sent)
        with self._cond:
            for batch in sent:
                for call in batch.calls:
                    call.state = QUEUED if batch.entry_id is not None else GONE
                if batch.entry_id is None:
                    error = next((exc for f, exc in failed if f is batch.calls[0].future), None)
                    why = f"not sent: {brief(error)}" if error is not None else "not sent"
                    failure = [type(error).__name__, why, "", None]
                    self._unsent.append(
                        (batch.index, batch.calls[0].index, len(batch.calls), failure)
                    )
                    self._batches.pop(batch.index, None)
                    for call in batch.calls:
                        self._futures.pop(call.index, None)
                    forget(batch)
            self._sending -= len(calls)
            self._cond.notify_all()
            late = self._sealed and bool(self._unsent)
        if late:  # (sealed already: a taken-back batch's calls sent again)
            self._record_unsent()
        for future, exc in failed:  # outside the lock: a future's callbacks run here
            future.take_back = None
            if future.start():
                future.set_exception(exc)

    def _read_costs(self, refs: set[str]) -> None:
        """Read the published costs of functions not seen yet (then ``_write``
        keeps them fresh in its pipeline): one round trip, the first time only."""
        unknown = sorted(ref for ref in refs if ref not in self._costs)
        if not unknown:
            return
        pipe = self.client.redis.pipeline(transaction=False)
        for ref in unknown:
            pipe.get(keys.cost(ref))  # (GET, not MGET: the keys may lie in several slots)
        try:
            raw = pipe.execute()
        except redis.RedisError:  # the write will say it; meanwhile: unknown costs
            raw = [None] * len(unknown)
        now = time.time()
        for ref, value in zip(unknown, raw, strict=True):
            self._costs[ref] = (now, parse_cost(value))

    def _per_batch(self, fn_ref: str) -> int:
        return calls_per_batch(self._costs.get(fn_ref, (0.0, None))[1])

    def _send(self, sent: list[Sent]) -> list[tuple[CallFuture, BaseException]]:
        """Write the batches in one pipeline; their entry ids are set on success.
        Returns the futures to fail, with why."""
        client = self.client
        codec = client.codec
        failed: list[tuple[CallFuture, BaseException]] = []
        ready = []
        for batch in sent:
            try:
                batch.payload = codec.dumps([call.item for call in batch.calls])
            except BaseException as exc:  # encoded alone, it passed: say what changed
                failed += [(call.future, exc) for call in batch.calls]
                continue
            ready.append(batch)
        if not ready:
            return failed
        try:
            self._write(ready)
        except (TaskfanError, redis.RedisError) as exc:
            for batch in ready:
                if batch.entry_id is None:
                    failed += [(call.future, exc) for call in batch.calls]
        return failed

    def _write(self, batches: list[Sent]) -> None:
        client = self.client
        seq = Sequenced(client.redis)
        if self._keeper is not None:
            self._keeper.check()  # JobAbandoned: this process froze past the lease
        job = self._job or self._open_job(seq)
        records = self._records
        assert records is not None
        pipe: Any = seq.pipe
        if self._sealed:  # calls of a batch taken back, sent again: the size first
            self._seal_job(pipe)
            seq.barrier(raise_on_error=True)
            pipe = seq.pipe
        else:  # (the size the job's meta shows while it grows)
            records.count(pipe, sum(len(b.calls) for b in batches), len(batches))
        first = len(seq.results) + len(pipe)
        now = time.time()
        for batch in batches:
            records.queue_entry(pipe, self._entry(job, batch), now)
        refs = sorted({b.calls[0].called.fn_ref for b in batches})
        stale = [r for r in refs if now - self._costs.get(r, (-COST_FRESH, None))[0] >= COST_FRESH]
        for ref in stale:
            pipe.get(keys.cost(ref))
        with translate_errors(f"submitting to job {job.id}"):
            replies = seq.execute(raise_on_error=False)
        for ref, raw in zip(stale, replies[len(replies) - len(stale) :], strict=True):
            self._costs[ref] = (now, None if isinstance(raw, Exception) else parse_cost(raw))
        errors = []
        for batch, reply in zip(batches, replies[first : first + len(batches)], strict=True):
            if isinstance(reply, Exception):
                errors.append(reply)
            else:
                batch.entry_id = reply
                batch.payload = b""
        if self._keeper is None:  # the job's meta exists now
            keeper = LeaseKeeper(client.redis, job.keys, client.enqueue_lease).start()
            self._keeper = keeper
            weakref.finalize(self, keeper.stop)  # an executor dropped without shutdown()
        self._job = job  # (from now on, a lone call may be sent by its caller)
        self._start_collector()
        if errors:
            with translate_errors(f"submitting to job {job.id}"):
                raise errors[0]

    def _entry(self, job: Job, batch: Sent) -> BatchEntry:
        called = batch.calls[0].called
        start, count = batch.calls[0].index, len(batch.calls)
        return BatchEntry(
            job.id, batch.index, start, count, called.fn_ref, self.client.codec.name,
            CallMode.CALL, 0, batch.payload, wrap=called.wrap, bound=called.bound,
            initializer=self._init[0], initargs=self._init[1],
        )  # fmt: skip

    def _open_job(self, seq: Sequenced) -> Job:  # pragma: no cover - Executor's
        raise NotImplementedError

    def _start_collector(self) -> None:  # pragma: no cover - Executor's
        raise NotImplementedError

    def _drain(self) -> None:
        """Until every call submitted so far was sent (or failed); the submitter
        thread ends once the executor is shut down and nothing is left."""
        with self._cond:
            self._cond.notify_all()
            while self._open or self._sending:
                self._cond.wait()

    # ------------------------------------------------------------ sealing

    def _seal(self) -> None:
        """Send what is buffered, then fix the job's size (``seal.lua``). A call
        taken back later sends the rest of its batch with the size fixed anew
        first (``_write``), so the job cannot finish before them."""
        with self._take_backs:
            self._drain()
            with self._cond:
                self._sealed = True
                job = self._job
            if job is None:
                return
            self._record_unsent()
            with translate_errors(f"sealing job {job.id}"):
                self._seal_job(self.client.redis)
            if self._keeper is not None:
                self._keeper.stop()

    def _seal_job(self, target: Any) -> Any:
        """Seal the job with the calls and batches so far, on a pipeline or a client."""
        assert self._records is not None
        return self._records.seal(target, self._count, self._batch_count, time.time())
