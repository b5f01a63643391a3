"""What a node has done: counters, its current rate, and item durations per function.

The node's main thread writes (``batch``, ``chunk``, ``reclaimed``); the
heartbeat thread (the node record) and the metrics server's thread (Prometheus)
read. Writes are plain integer and float updates on objects that already exist,
with a new dictionary entry the first time a queue or function shows up;
readers take ``dict.copy()`` snapshots, which are atomic under the GIL, so no
lock sits on the hot path.

Item durations are observed per chunk, not per item: the pool reports a
chunk's time (``worker.pool.child.ChunkResult.seconds``) and every item of the chunk
counts once at the chunk's average. A chunk aims at about 50 ms, so the
histogram shows each function's typical item cost, not the spread inside a
chunk. That costs the node one bisect per chunk and the children nothing.

Function names come from batch entries, which anyone who can write to Redis
can add: counters and durations track at most ``MAX_FUNCTIONS`` functions (the
first seen), the rest together under ``OTHER``, and a batch that was
dead-lettered (refused, unverified or malformed: nothing of it ran) counts
under ``REFUSED`` whatever function it names. So forged entries cannot grow a
node's memory or its metrics page (docs/security.md).
"""

from __future__ import annotations

import bisect
import json
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskfan import __version__
from taskfan.settings import Settings
from worker.services.backlog import HELD_FIELD, held_items

if TYPE_CHECKING:
    from worker.core.batches import Batch, Completed

#: upper bounds (seconds) of the item duration histogram's buckets; +Inf is implied
DURATION_BUCKETS = (
    0.00001, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0,
)  # fmt: skip
#: seconds of history the rate is measured over
RATE_WINDOW = 60.0
#: functions tracked one by one; any further function counts under OTHER
MAX_FUNCTIONS = 100
#: the function label of the functions past MAX_FUNCTIONS
OTHER = "(other)"
#: the function label of dead-lettered batches (refused, unverified, malformed)
REFUSED = "(refused)"


@dataclass
class Counts:
    """Per queue and function: items and batches recorded by this node."""

    items_ok: int = 0
    items_failed: int = 0
    batches: int = 0
    batches_failed: int = 0  #: batches with at least one failed item
    batches_dead: int = 0  #: batches this node moved to the dead-letter stream
    items_retried: int = 0  #: attempts made again after an item raised (retries)


@dataclass
class Durations:
    """A histogram of item durations whose observations carry a weight (items)."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    count: int = 0
    sum: float = 0.0

    def observe(self, items: int, seconds: float) -> None:
        """``items`` items that took ``seconds`` together, each at the average."""
        self.buckets[bisect.bisect_left(DURATION_BUCKETS, seconds / items)] += items
        self.count += items
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, items at most that long), Prometheus style, +Inf last."""
        out, total = [], 0
        for bound, count in zip((*map(str, DURATION_BUCKETS), "+Inf"), self.buckets, strict=True):
            total += count
            out.append((bound, total))
        return out


class NodeStats:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        #: (queue, function) -> counts
        self.counts: dict[tuple[str, str], Counts] = {}
        #: function -> item durations
        self.durations: dict[str, Durations] = {}
        #: queue -> batches this node took over from others whose lease lapsed
        self.reclaims: dict[str, int] = {}
        #: queue -> batches acknowledged without running: their job was cancelled,
        #: abandoned or gone
        self.skipped: dict[str, int] = {}
        #: queue -> batches handed back unrun: this node cannot run their function
        self.given_back: dict[str, int] = {}
        self._samples: deque[tuple[float, int]] = deque([(clock(), 0)])
        #: the functions tracked one by one (at most MAX_FUNCTIONS)
        self._functions: set[str] = set()

    # ----------------------------------------------------------------- writers (main thread)

    def _label(self, fn_ref: str) -> str:
        """``fn_ref`` while fewer than MAX_FUNCTIONS functions are tracked, else OTHER."""
        if fn_ref in self._functions:
            return fn_ref
        if len(self._functions) >= MAX_FUNCTIONS:
            return OTHER
        self._functions.add(fn_ref)
        return fn_ref

    def _counts(self, queue: str, fn_ref: str) -> Counts:
        fn_ref = fn_ref if fn_ref == REFUSED else self._label(fn_ref)
        counts = self.counts.get((queue, fn_ref))
        if counts is None:
            counts = self.counts[(queue, fn_ref)] = Counts()
        return counts

    def batch(self, queue: str, fn_ref: str, ok: int, failed: int, dead: bool = False) -> None:
        counts = self._counts(queue, fn_ref)
        counts.items_ok += ok
        counts.items_failed += failed
        counts.batches += 1
        counts.batches_failed += failed > 0
        counts.batches_dead += dead

    def completed(self, completed: Completed) -> None:
        """A batch the node is about to record (or dead-letter)."""
        delivery = completed.delivery
        dead = completed.dead_reason is not None
        if dead:  # nothing of it ran, and what it names is untrusted
            self.batch(delivery.queue.name, REFUSED, completed.ok, completed.failed, dead)
        elif completed.job_id:
            fn_ref = (delivery.fields or {}).get(b"f", b"?").decode("utf-8", "replace")
            self.batch(delivery.queue.name, fn_ref, completed.ok, completed.failed)
        elif completed.skipped:  # fetched, then let go: its job ended meanwhile
            self.skip(delivery.queue.name)

    def retried(self, queue: str, fn_ref: str, items: int) -> None:
        """``items`` items raised and will be tried again."""
        self._counts(queue, fn_ref).items_retried += items

    def chunk(self, fn_ref: str, items: int, seconds: float) -> None:
        if items <= 0:
            return
        fn_ref = self._label(fn_ref)
        durations = self.durations.get(fn_ref)
        if durations is None:
            durations = self.durations[fn_ref] = Durations()
        durations.observe(items, seconds)

    def reclaimed(self, queue: str) -> None:
        self.reclaims[queue] = self.reclaims.get(queue, 0) + 1

    def gave_back(self, queue: str) -> None:
        self.given_back[queue] = self.given_back.get(queue, 0) + 1

    def skip(self, queue: str) -> None:
        self.skipped[queue] = self.skipped.get(queue, 0) + 1

    # ----------------------------------------------------------------- readers

    def totals(self) -> Counts:
        total = Counts()
        for counts in self.counts.copy().values():
            total.items_ok += counts.items_ok
            total.items_failed += counts.items_failed
            total.batches += counts.batches
            total.batches_failed += counts.batches_failed
            total.batches_dead += counts.batches_dead
            total.items_retried += counts.items_retried
        return total

    def rate(self) -> float:
        """Items per second (succeeded or failed) over about the last minute.

        Each call adds a sample; call it from one thread (the heartbeat's).
        """
        now = self.clock()
        totals = self.totals()
        items = totals.items_ok + totals.items_failed
        samples = self._samples
        samples.append((now, items))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
        then, before = samples[0]
        return (items - before) / (now - then) if now > then else 0.0


class NodeView:
    """A node as others see it: the record it publishes every heartbeat (``taskfan
    nodes``) and what its metrics read. Its callables run on other threads than
    the node's main thread; each reads one value, or copies a dict in one C call.
    """

    def __init__(
        self,
        node_id: str,
        settings: Settings,
        started_at: float,
        stats: NodeStats,
        batches: Callable[[], list[Batch]],
        pool_chunks: Callable[[], int],
        pool_restarts: Callable[[], int],
        retrying: Callable[[], int] = lambda: 0,
        posture: dict[str, str] | None = None,
        cannot_run: Callable[[], str] = lambda: "{}",
    ) -> None:
        self.node_id = node_id
        self.settings = settings
        self.started_at = started_at
        self.stats = stats
        self.batches = batches
        self.pool_chunks = pool_chunks
        self.pool_restarts = pool_restarts
        #: items waiting in the node for a retry's backoff
        self.retrying = retrying
        #: what the node accepts (``Guard.posture``): signed, pickle, allow
        self.posture = dict(posture or {})
        #: JSON: the functions this node cannot run -> why (``worker.core.unrunnable``)
        self.cannot_run = cannot_run
        #: "host:port" of the metrics server, once it runs
        self.metrics_address: str | None = None
        #: what the node's sources add to its record (``Source.record_fields``)
        self.source_fields: dict[str, str] = {}
        #: queue -> (batches waiting, in flight, dead letters), sampled each heartbeat
        self.queues: dict[str, tuple[int, int, int]] = {}
        #: queue -> (items waiting, items in flight), sampled each heartbeat
        #: (``worker.services.backlog``)
        self.queue_items: dict[str, tuple[int, int]] = {}
        #: when the last heartbeat reached Redis (monotonic seconds; None: not yet)
        self.beat_at: float | None = None

    def record(self) -> dict[str, Any]:
        """The node record; docs/operations.md lists its fields."""
        settings, totals = self.settings, self.stats.totals()
        held = self.batches()
        jobs = sorted({batch.entry.job_id for batch in held})
        record: dict[str, Any] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": __version__,
            "processes": settings.processes,
            "chunksize": settings.chunksize or "auto",
            "queues": json.dumps(settings.queues),  # a name may hold a comma
            "started_at": self.started_at,
            "heartbeat_at": time.time(),
            "items_done": totals.items_ok,
            "items_failed": totals.items_failed,
            "batches_done": totals.batches,
            "batches_failed": totals.batches_failed,
            "batches_dead": totals.batches_dead,
            "items_retried": totals.items_retried,
            "reclaims": sum(self.stats.reclaims.copy().values()),
            "batches_skipped": sum(self.stats.skipped.copy().values()),
            "batches_given_back": sum(self.stats.given_back.copy().values()),
            "cannot_run": self.cannot_run(),
            "pool_restarts": self.pool_restarts(),
            "rate": round(self.stats.rate(), 2),
            "in_flight": len(held),
            "busy": self.pool_chunks(),
            "retrying": self.retrying(),
            "jobs": ",".join(jobs[:10]),
            HELD_FIELD: held_items((b.delivery.queue.name, b.entry.count) for b in held),
        }
        record.update(self.posture)
        record.update(self.source_fields)
        if self.metrics_address is not None:
            record["metrics"] = self.metrics_address
        return record

    def summary(self) -> str:
        totals = self.stats.totals()
        return (
            f"items done {totals.items_ok}, items failed {totals.items_failed}, "
            f"batches done {totals.batches}, pool restarts {self.pool_restarts()}"
        )
