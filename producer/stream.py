"""A streaming map: ``Client.map(fn, iterable, stream=True)``.

The handle comes back at once, as soon as the job's meta exists; a background
thread reads the input and enqueues its batches while results flow back.
Back-pressure: the thread sends a batch only while fewer than ``window``
batches are sent and not yet read by the handle's ``results()`` or
``outcomes()``; past that it waits for the reader. The reader frees each
batch's result (lua/release.lua) and the events before it once the consumer
has moved past it. So a map over ``itertools.count()`` runs for ever with at
most ``window`` batches in Redis, in the node and in this process.

The job stays unsealed (its enqueue lease renewed, ``producer.lease``) until the
input ends; it is then sealed like any job. A stream nobody reads waits for its
reader as long as its handle and this process live: the handle's finalizer
(which also runs at the interpreter's exit) cancels it, and a killed producer
renews no lease, so the job ends ``abandoned``. Closing the results iterator
(``break``, ``close()``, garbage collection) or dropping the handle before the
input ended cancels the job and stops the thread. An input that raises, or an
item that cannot be encoded, cancels the job too, and the reader raises that
error after the values of the items before it.

The thread rides out a Redis outage (the one list of transient errors and the
one backoff, ``taskfan.transient``) until it has lasted the enqueue lease, past
which the job would be abandoned anyway; then it gives up, and the reader
raises its error as soon as it has to wait, and cancels the job.

Only this handle's in-order reader drives the window and frees results:
``status``, ``wait`` and the dashboard see the job's progress, but its results
can be read once, here.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

import redis

from producer import reader, rejects
from producer.enqueue import Enqueuer, batches_of
from producer.handle import JobClient
from producer.job import Job
from taskfan import scripts
from taskfan.connection import RedisClient, translate_errors
from taskfan.errors import ConfigError, JobCancelled, TaskfanError
from taskfan.keys import JobKeys
from taskfan.protocol import BatchEntry
from taskfan.transient import AWAY, TRANSIENT, Backoff

log = logging.getLogger(__name__)

#: batches sent and not yet read, by default
DEFAULT_WINDOW = 16
#: events kept beyond the window: the job's sealed and end events, and slack
EVENTS_SLACK = 16
#: how often a producer waiting for the reader checks that the job still runs
_RECHECK = 1.0


class Window:
    """Batches sent versus batches read, shared by the enqueuer thread and the reader."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.read = 0
        self.stopped = False
        self._cond = threading.Condition()

    def wait_for_room(self, sent: int, alive: Any) -> bool:
        """Block while ``size`` batches are unread; False once stopped (or
        ``alive()`` says the job ended under us)."""
        with self._cond:
            while not self.stopped and sent - self.read >= self.size:
                self._cond.wait(_RECHECK)
                if not alive():
                    self.stopped = True
            return not self.stopped

    def advance(self, read: int) -> None:
        with self._cond:
            self.read = max(self.read, read)
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or until stopped."""
        with self._cond:
            if not self.stopped:
                self._cond.wait(seconds)


class StreamEnqueuer(Enqueuer):
    """An ``Enqueuer`` that sends each batch at once, within the window, from a thread."""

    window: Window
    #: the input, until the thread takes it
    items: Iterable[Any] = ()
    #: what stopped the thread: the input's error, the codec's, Redis's
    error: BaseException | None = None
    #: Redis's error when the thread gave up riding out an outage: the reader
    #: raises it as soon as it has to wait (``check``), and cancels the job
    gave_up: BaseException | None = None

    def open(self, window: Window) -> None:
        """Create the job, unsealed, with its lease kept (before the handle exists)."""
        self.window = window
        with translate_errors(f"enqueueing job {self.job_id} on queue {self.spec.queue}"):
            self._flush([], seal=False)

    def produce(self) -> None:
        """The thread's body: send every batch, then seal. An error (the input's,
        the codec's) is kept for the reader, which raises it after the values of
        the items sent before it: the job is sealed with them, or cancelled when
        even that fails (Redis away). Given up on Redis, it leaves the lease
        kept: the reader cancels the job when it raises the error (the keeper
        then stops), rather than the job ending abandoned before it does; and
        if the outage is everyone's, the lease lapses all the same."""
        items, self.items = self.items, ()
        try:
            self._send(items)
        finally:
            self.window.stop()
            if self._keeper is not None and self.gave_up is None:
                self._keeper.stop()

    def _send(self, items: Iterable[Any]) -> None:
        where = f"enqueueing job {self.job_id} on queue {self.spec.queue}"
        try:
            with translate_errors(where):
                if not self._produce(self._until_error(items)):
                    return  # stopped: the reader cancelled the job
        except AWAY as exc:  # an outage longer than the lease: the reader says it
            self.error = self.gave_up = exc
            return
        except BaseException as exc:  # the codec, a limit: the reader says it
            self.error = exc
        try:
            with translate_errors(where):
                self._retrying("sealing", self._seal)
        except BaseException as exc:
            self.error = self.error or exc
            if isinstance(exc, AWAY):
                self.gave_up = self.error
            with contextlib.suppress(TaskfanError, redis.RedisError):
                scripts.cancel_job(self.client, self.job, time.time())

    def check(self) -> None:
        """Raise the error the thread gave up with, if it did (the reader calls
        this each time it waits)."""
        if self.gave_up is not None:
            raise self.gave_up

    def _retrying(self, what: str, send: Callable[[], None]) -> None:
        """``send()``, tried again through a transient Redis error with the one
        backoff (``taskfan.transient``) until the outage has lasted the enqueue
        lease: past it the job is abandoned anyway, so the error is raised.

        A pipeline cut off after the server ran it is sent again: its batch is
        then queued twice (it may run twice, and is recorded once; the totals
        are set when the job is sealed)."""
        backoff = Backoff()
        give_up: float | None = None
        while True:
            try:
                send()
                return
            except TRANSIENT as exc:
                now = time.monotonic()
                give_up = now + self.lease if give_up is None else give_up
                if now >= give_up or self.window.stopped:
                    raise
                log.warning(
                    "job %s: %s failed, retrying in %.1fs: %s",
                    self.job_id, what, backoff.delay, exc,
                )  # fmt: skip
                self.window.pause(backoff.next())

    def _until_error(self, items: Iterable[Any]) -> Iterator[Any]:
        """The input's items until it raises; the error is kept in ``error``."""
        try:
            yield from items
        except GeneratorExit:
            raise
        except BaseException as exc:  # the user's input: any error ends it
            self.error = exc

    def _produce(self, items: Iterable[Any]) -> bool:
        """Send the batches; False when stopped before the input ended."""
        window = self.window
        for batch in batches_of(items, self.spec, lambda: self._cap):
            if not window.wait_for_room(self.batches, self._alive):
                return False
            made: list[BatchEntry | rejects.RecordedBatch] = []
            for rejected, run in rejects.runs(batch):
                made.extend([self._rejected(run)] if rejected else self._entries(run))
            self._retrying("sending a batch", functools.partial(self._flush, made, seal=False))
            self._sent_ids.clear()  # kept by Enqueuer for abort(); a stream cancels instead
        return not window.stopped

    def _alive(self) -> bool:
        """Whether the job still takes batches: not sealed under us, not ended
        (cancelled by someone else, abandoned). Redis away: yes, for now."""
        if self._keeper is None or not self._keeper.running():
            return False
        try:
            state = self.client.hget(self.job.meta, "state")
        except (redis.RedisError, OSError):
            return True
        return state == b"active"


class StreamJob(Job):
    """The handle of a streaming map: its in-order reader drives the window."""

    def __init__(self, client: JobClient, enqueuer: StreamEnqueuer, window: Window) -> None:
        super().__init__(client, enqueuer.job_id, codec=enqueuer.spec.codec.name)
        self._enqueuer = enqueuer
        self._window = window
        #: the thread that reads the input and sends its batches
        self.thread = threading.Thread(
            target=enqueuer.produce, name=f"taskfan-stream-{self.id}", daemon=True
        )
        # A handle dropped before it was read to the end: cancel, stop the thread.
        self._finalizer = weakref.finalize(self, _stop, client.redis, self.keys, window)

    def results(self, timeout: float | None = None) -> Generator[Any, None, None]:
        """Values in input order (once: each batch is freed as it is read)."""
        return self._read(reader.values(self, timeout, self._release, self._enqueuer.check))

    def outcomes(self, timeout: float | None = None) -> Generator[Any, None, None]:
        """Every item's outcome in input order (once: each batch is freed as it is read)."""
        return self._read(reader.outcomes(self, timeout, self._release, self._enqueuer.check))

    def as_completed(self, timeout: float | None = None) -> Iterator[Any]:
        """Refused: only the in-order reader frees what it read and lets the
        enqueuer go on; this one would stall the job at its window."""
        raise ConfigError(
            f"job {self.id} is a streaming map: read it in order with results() or "
            "outcomes(), which let its enqueuer go on"
        )

    def _read(self, source: Iterator[Any]) -> Generator[Any, None, None]:
        complete = False
        try:
            yield from source
            complete = True
            self._finalizer.detach()
            if self._enqueuer.error is not None:  # the input failed after these
                raise self._enqueuer.error
        except JobCancelled:
            error = self._enqueuer.error
            if error is not None:  # the input failed: say so, not "cancelled"
                raise error from None
            raise
        finally:
            if not complete:
                _stop(self.client.redis, self.keys, self._window)

    def _release(self, read: int, fields: list[str]) -> None:
        keep = self._window.size + EVENTS_SLACK
        with translate_errors(f"releasing results of job {self.id}"):
            scripts.release_results(self.client.redis, self.keys, read, keep, fields)
        self._window.advance(read)


def _stop(client: RedisClient, job: JobKeys, window: Window) -> None:
    """Stop the enqueuer thread and cancel what is left of the job (nothing
    when it has ended)."""
    window.stop()
    with contextlib.suppress(TaskfanError, redis.RedisError):
        scripts.cancel_job(client, job, time.time())


def start(
    client: JobClient, enqueuer: StreamEnqueuer, items: Iterable[Any], window: int
) -> StreamJob:
    """Create the job, start the thread that feeds it, return its handle."""
    shared = Window(window)
    enqueuer.open(shared)
    enqueuer.items = items
    job = StreamJob(client, enqueuer, shared)
    job.thread.start()
    return job
