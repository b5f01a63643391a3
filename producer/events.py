"""Waiting on a job's events stream: what ``Job`` and ``Executor`` block on.

Readers block on the stream (XREAD BLOCK), never poll: each recorded batch adds
an event (entries: ``taskfan.meta``), so results stream out as soon as their
batch is recorded. A reader that knows which results it waits for passes their
fields (``prefetch``): the events read and an HMGET of those fields go out in
one pipeline, and Redis runs the HMGET the moment the read wakes, so the
results of the batches the events announce come back in the same round trip
(record.lua writes a batch's results and its event at once). Across a network
that saves a round trip per wake-up, the last one included.

``Events`` blocks in slices shorter than the client's socket timeout until a
deadline, and rides out Redis outages; after each slice that brings no event
it checks that the job still exists, so a job whose keys vanish
(FLUSHDB, expiry, purge) raises JobNotFound within one slice (at most 5 s),
whatever the deadline. ``scan`` reads what the events say.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any

import redis

from producer.listeners import NobodyWatch
from taskfan import scripts
from taskfan.connection import RedisClient
from taskfan.errors import JobNotFound, ProtocolError
from taskfan.keys import JobKeys
from taskfan.meta import JobState
from taskfan.transient import AWAY, Backoff

log = logging.getLogger(__name__)

#: end states after which no further batch will come
_STOPPED = {JobState.CANCELLED.value.encode(), JobState.ABANDONED.value.encode()}

#: what Events._attempt returns after a transient error
_FAILED: Any = object()

#: longest single XREAD BLOCK; a waiter with no deadline simply blocks again
BLOCK_SLICE = 5.0


def block_slice(redis_client: RedisClient) -> float:
    """The longest block that ends before the client's socket timeout (redis-py 8
    defaults it to 5 s), or every long wait would end in a timeout error."""
    pool = getattr(redis_client, "connection_pool", None)
    socket_timeout = getattr(pool, "connection_kwargs", {}).get("socket_timeout")
    if socket_timeout:
        return max(0.1, min(BLOCK_SLICE, socket_timeout - 1.0))
    return BLOCK_SLICE


class Events:
    """Reads a job's events stream from the start, blocking until the deadline.

    Each batch's event is returned once. After a dropped connection the stream
    is read again from the start: across a failover the new master may hold
    events older than the last one seen on the old master (replication is
    asynchronous), which reading on from that id would skip.
    """

    def __init__(
        self,
        redis_client: RedisClient,
        keys: JobKeys,
        timeout: float | None,
        queue: str | None = None,
    ) -> None:
        self.redis = redis_client
        self.keys = keys
        #: with the job's queue: after a few seconds without a live node serving
        #: it, one warning (``producer.listeners``), checked on quiet slices
        self.nobody = None if queue is None else NobodyWatch(redis_client, queue, keys.id)
        if timeout is not None and timeout != timeout:  # NaN: no deadline of it passes
            raise ValueError(f"job {keys.id}: timeout must be seconds or None, got nan")
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.last = b"0-0"
        #: the results fields of the batch events returned so far
        self.seen: set[bytes] = set()
        #: results fields -> their raw entries, read with the events (``prefetch``)
        self.fetched: dict[str, bytes] = {}
        #: cost key -> its value, read with the events (``read``'s ``cost``)
        self.costs: dict[str, bytes | None] = {}
        #: the job's meta hash, read with the first events (``read``'s ``meta``)
        self.raw_meta: dict[bytes, bytes] | None = None
        #: called each time this waits for events, before it blocks: raises to
        #: stop the wait (a streaming map's enqueuer gave up)
        self.check: Callable[[], None] | None = None
        self._reread = False
        self._backoff = Backoff()
        self._slice = block_slice(redis_client)

    def watch(self, queue: str) -> None:
        """Warn (once, after a few seconds) when no live node serves ``queue``."""
        self.nobody = NobodyWatch(self.redis, queue, self.keys.id)

    def remaining(self) -> float:
        """Seconds left to block; raises TimeoutError once the deadline passed."""
        if self.deadline is None:
            return self._slice
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise FuturesTimeout(f"job {self.keys.id}: timed out waiting for results")
        return min(self._slice, left)

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a Redis call, riding out outages (restarts, dropped connections,
        failovers) with backoff until the deadline: a waiter survives them."""
        while True:
            result = self._attempt(what, fn, *args, **kwargs)
            if result is not _FAILED:
                return result

    def _attempt(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One try of a Redis call; after a transient error, back off and return _FAILED."""
        try:
            result = fn(*args, **kwargs)
        except AWAY as exc:
            self._reread = True
            log.warning(
                "job %s: %s failed, retrying in %.1fs: %s",
                self.keys.id,
                what,
                self._backoff.delay,
                exc,
            )
            time.sleep(min(self._backoff.next(), self.remaining()))
            return _FAILED
        self._backoff.reset()
        return result

    def read(
        self, prefetch: Sequence[str] = (), cost: str | None = None, meta: bool = False
    ) -> list[dict[bytes, bytes]]:
        """The next events; raises TimeoutError once the deadline passes. The
        results fields of ``prefetch`` that are recorded by the time the read
        wakes come in the same round trip, into ``fetched``; so does the value
        of the key ``cost`` (a function's published cost), into ``costs``. With
        ``meta``, the job's meta hash, read just before the events (it is sent
        ahead of them in the pipeline), into ``raw_meta``."""
        while True:
            if self.check is not None:
                self.check()
            if self._reread:
                self.last, self._reread = b"0-0", False
                # Back from an outage: a Redis that restarted empty took the job
                # with it. Say so now rather than after a block slice.
                if not self.call("checking", self.redis.exists, self.keys.meta):
                    raise JobNotFound(self.keys.id)
            block = max(1, int(self.remaining() * 1000))
            events = self._attempt("reading events", self._xread, block, prefetch, cost, meta)
            if events is _FAILED:
                continue
            if events:
                entries = events[0][1]
                self.last = entries[-1][0]
                fresh = [fields for _, fields in entries if self._fresh(fields)]
                if fresh:
                    return fresh
                continue
            # A slice with no event: is the job still there? Its keys may have
            # gone (FLUSHDB, expiry, purge), and with them every event to come:
            # waiters learn it within a slice, deadline or not.
            state = self.call(
                "checking", self.redis.hmget, self.keys.meta, "state", "sealed", "lease_until"
            )
            if state[0] is None:
                raise JobNotFound(self.keys.id)
            self._settle_lease(state)
            if self.nobody is not None:
                self.nobody.check()

    def _xread(
        self, block_ms: int, prefetch: Sequence[str], cost: str | None, meta: bool = False
    ) -> Any:
        """XREAD BLOCK on the events; with ``prefetch``, an HMGET of those results
        fields right behind it, in one pipeline (one slot: one connection, in
        order, on a cluster too), and with ``cost`` a GET of that key. With
        ``meta`` (until read), an HGETALL of the meta ahead of the read."""
        streams: dict[Any, Any] = {self.keys.events: self.last}
        wanted = [f for f in prefetch if f not in self.fetched]
        meta = meta and self.raw_meta is None
        if not wanted and cost is None and not meta:
            return self.redis.xread(streams, count=1000, block=block_ms)
        pipe = self.redis.pipeline(transaction=False)
        if meta:
            pipe.hgetall(self.keys.meta)
        pipe.xread(streams, count=1000, block=block_ms)
        if wanted:
            pipe.hmget(self.keys.results, wanted)
        if cost is not None:
            pipe.get(cost)
        replies = iter(pipe.execute())
        if meta:
            self.raw_meta = dict(next(replies))
        events = next(replies)
        if wanted:
            found = next(replies)
            self.fetched.update((f, raw) for f, raw in zip(wanted, found, strict=True) if raw)
        if cost is not None:
            self.costs[cost] = next(replies)
        return events

    def _settle_lease(self, state: list[bytes | None]) -> None:
        """A job still enqueuing whose producer's lease lapsed (it died, and no
        node has seen the job to end it) ends abandoned now; its end event then
        reaches this waiter (``producer.lease``). A client whose ACL forbids
        scripts leaves it to nodes and other readers."""
        job_state, sealed, lease_until = state
        if job_state != b"active" or sealed == b"1" or lease_until is None:
            return
        try:
            if float(lease_until) >= time.time():
                return
            self.call("ending a lapsed job", scripts.abandon_if_lapsed, self.redis, self.keys)
        except (ValueError, redis.ResponseError):
            return

    def _fresh(self, fields: dict[bytes, bytes]) -> bool:
        field = fields.get(b"b")
        if field is None:
            return True
        if field in self.seen:
            return False
        self.seen.add(field)
        return True


def scan(
    job_id: str, events: Iterable[dict[bytes, bytes]], batches: int | None
) -> tuple[list[str], int | None, str | None]:
    """Recorded results fields, the job's batch count once sealed (``batches``
    until then), and the state that stopped the job, if it was cancelled or
    abandoned (no further batch will come): ``errors.job_ended`` gives its error."""
    ready: list[str] = []
    cancelled: str | None = None
    for fields in events:
        try:
            if b"b" in fields:
                ready.append(fields[b"b"].decode("ascii"))
            elif b"sealed" in fields:
                batches = int(fields[b"sealed"])
            elif fields.get(b"end") in _STOPPED:
                cancelled = fields[b"end"].decode()
        except ValueError:  # UnicodeDecodeError too
            raise ProtocolError(
                f"job {job_id}: its events stream holds an entry that is not taskfan's: "
                f"{fields!r:.200}"
            ) from None
    return ready, batches, cancelled
