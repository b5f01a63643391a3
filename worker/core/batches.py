"""What a node holds: the stream entries it was handed (``Delivery``), the
batches it reads from them (``Batch``), the chunks it cuts them into (``Chunk``)
and what leaves it (``Completed``).

Plain data with no Redis I/O, shared by the pure core (the scheduler
``worker.core.scheduler``, the intake ``worker.core.intake``, the recorder
``worker.core.recorder``, the retry heap ``worker.core.retries``), by the Redis I/O that
fills and records them (``worker.sources.streams.redis_io``) and by sources
that build their batches themselves (``worker.sources.base``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from taskfan.keys import QueueKeys
from taskfan.protocol import BatchEntry

#: why a job ended when it was cancelled with terminate: its running items are
#: killed (``worker.sources.streams.job_states`` says it of a job, the scheduler acts on it)
TERMINATED = "the job was cancelled with terminate"


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to this node."""

    queue: QueueKeys
    entry_id: bytes
    fields: dict[bytes, bytes] | None  #: None when the entry was deleted meanwhile
    #: why the batch is not to run (its job was cancelled or no longer exists)
    skip: str | None = None
    #: how many times the entry was delivered, this time included
    deliveries: int = 1
    #: what Redis said of the entry's job when it was read; None: not looked up
    job: JobFacts | None = None


@dataclass(frozen=True)
class JobFacts:
    """A job as a node saw it when it read one of its entries (``worker.core.entry_checks``
    checks a signed entry against it: replays)."""

    state: bytes | None  #: None: no such job (expired or deleted)
    nonce: bytes | None  #: the nonce in its meta (signed there)


@dataclass
class Completed:
    """A batch ready to be recorded (or dead-lettered) and acknowledged."""

    delivery: Delivery
    job_id: str  #: "" when the entry is too broken to name its job
    field: str  #: the results-hash field: the batch index, or "<index>.<round>" for a retry
    entry: bytes  #: the result entry
    ok: int
    failed: int
    dead_reason: str | None = None  #: when set, the entry goes to the dead-letter stream
    #: what record.lua answered, filled in by write()
    code: int | None = None
    #: (function reference, seconds per item) to publish for producers' batch sizing
    cost: tuple[str, float] | None = None
    #: let go unrecorded after it was fetched: its job ended (``worker.core.liveness``)
    skipped: bool = False
    #: set by write() once the entry is acknowledged (or dead-lettered): a group
    #: written again after an out-of-memory refusal skips it
    acked: bool = False
    #: not to record nor acknowledge: hand the batch back for another node, its
    #: delivery undone (this node cannot run its function: ``worker.core.unrunnable``)
    give_back: bool = False

    @classmethod
    def ack_only(cls, delivery: Delivery) -> Completed:
        """Acknowledged with nothing recorded: an entry deleted meanwhile, or a
        batch whose job was cancelled or is gone before it was read."""
        return cls(delivery, "", "", b"", 0, 0)

    @classmethod
    def dead_letter(cls, delivery: Delivery, reason: str) -> Completed:
        """Moved to the dead-letter stream with ``reason``, nothing recorded: an
        entry too broken (or too big to fail item by item) to record."""
        return cls(delivery, "", "", b"", 0, 0, dead_reason=reason)

    @classmethod
    def let_go(cls, delivery: Delivery) -> Completed:
        """Acknowledged unrecorded after it was fetched: its job ended meanwhile
        (``worker.core.liveness``)."""
        return cls(delivery, "", "", b"", 0, 0, skipped=True)

    @classmethod
    def handed_back(cls, delivery: Delivery) -> Completed:
        """A batch another node should run (``worker.core.unrunnable``)."""
        return cls(delivery, "", "", b"", 0, 0, give_back=True)

    @classmethod
    def counted(cls, delivery: Delivery, ok: int, failed: int) -> Completed:
        """A batch its source recorded its own way: only how many items it
        recorded as done and as failed (``worker.sources.base.Source.complete``)."""
        return cls(delivery, "", "", b"", ok, failed)


@dataclass(eq=False)
class Batch:
    """A batch this node holds: its entry, its items and the chunks' results so far."""

    delivery: Delivery
    entry: BatchEntry
    items: list[Any]
    started: float
    #: offset of a part's first item -> its blob (``worker.pool.outcome_parts``: a chunk,
    #: or a run of one)
    blobs: dict[int, bytes] = field(default_factory=dict)
    #: offset of a part's first item -> its failed items
    failures: dict[int, int] = field(default_factory=dict)
    failed: int = 0
    remaining: int = 0  #: items without their final outcome, those waiting to retry included
    retrying: int = 0  #: items waiting for a retry (``worker.core.retries``)
    retried: int = 0  #: retries so far
    dropped: bool = False  #: given up (handed back, or its job ended): its retries are void
    retries_dropped: int = 0  #: items waiting to retry that were dropped when its job ended
    terminated: int = 0  #: items in a pool killed for a hard cancel of their job
    let_go: bool = False  #: its job ended: acknowledged unrecorded, nothing more of it runs
    #: what its items (and its chunks) take decoded, estimated (taskfan.limits.decoded_size)
    decoded: int = 0
    chunk_size: int = 0  #: items per chunk, decided when it was taken (0: when admitted)
    #: items of its first chunks when it was cut (``worker.core.chunk_sizing.guided``; 0: not yet)
    chunk_large: int = 0


#: what the node's bookkeeping takes per chunk (measured: 152 bytes with its
#: bounds and its place in a deque); counted in a batch's decoded estimate, since
#: a batch of 30 million items of two bytes each cut one item per chunk would
#: take 4.5 GiB of chunks alone
CHUNK_BYTES = 160


@dataclass(eq=False, slots=True)
class Chunk:
    """Items ``lo`` to ``hi - 1`` of a batch, or, for a chunk of retries, the
    items ``retrying`` names ((offset, attempt) each; ``lo`` and ``hi`` span them)."""

    batch: Batch
    lo: int
    hi: int
    suspect: bool = False  #: was in a pool that broke; runs alone
    deadline: float | None = None  #: monotonic time its hard timeout ends, once in the pool
    retrying: tuple[tuple[int, int], ...] | None = None

    @classmethod
    def of_retries(
        cls, batch: Batch, retrying: Sequence[tuple[int, int]], suspect: bool = False
    ) -> Chunk:
        return cls(batch, retrying[0][0], retrying[-1][0] + 1, suspect, retrying=tuple(retrying))

    @property
    def size(self) -> int:
        return self.hi - self.lo if self.retrying is None else len(self.retrying)

    def items(self) -> list[Any]:
        if self.retrying is None:
            return self.batch.items[self.lo : self.hi]
        return [self.batch.items[offset] for offset, _ in self.retrying]

    def halves(self) -> list[Chunk]:
        """Two suspects of half the items each."""
        if self.retrying is None:
            mid = (self.lo + self.hi) // 2
            return [Chunk(self.batch, self.lo, mid, True), Chunk(self.batch, mid, self.hi, True)]
        mid = len(self.retrying) // 2
        return [
            Chunk.of_retries(self.batch, half, True)
            for half in (self.retrying[:mid], self.retrying[mid:])
        ]

    def runs(self) -> list[tuple[int, int, list[int]]]:
        """(lo, hi, attempt of each item) per run of items that follow each other."""
        if self.retrying is None:
            return [(self.lo, self.hi, [])]
        runs: list[tuple[int, int, list[int]]] = []
        for offset, attempt in self.retrying:
            if runs and runs[-1][1] == offset:
                lo, _, attempts = runs[-1]
                runs[-1] = (lo, offset + 1, [*attempts, attempt])
            else:
                runs.append((offset, offset + 1, [attempt]))
        return runs

    def where(self) -> str:
        entry = self.batch.entry
        if self.retrying is not None:
            tries = ", ".join(f"{entry.start + o} (attempt {a})" for o, a in self.retrying[:5])
            more = f" and {self.size - 5} more" if self.size > 5 else ""
            return (
                f"job {entry.job_id} batch {entry.index} item{'s' * (self.size > 1)} {tries}{more}"
            )
        first = entry.start + self.lo
        items = f"item {first}" if self.size == 1 else f"items {first}-{first + self.size - 1}"
        return f"job {entry.job_id} batch {entry.index} {items}"


def key(delivery: Delivery) -> tuple[str, bytes]:
    return (delivery.queue.name, delivery.entry_id)
