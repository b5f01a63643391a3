"""What a node holds: the batches it was given, and the chunks it cuts them into.

Plain data, shared by the scheduler (``worker.scheduler``), the intake
(``worker.intake``), the recorder (``worker.recorder``), the retry heap
(``worker.retries``) and the RQ source, which builds its batches itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from taskfan.protocol import BatchEntry
from worker.redis_io import Delivery


@dataclass(eq=False)
class Batch:
    """A batch this node holds: its entry, its items and the chunks' results so far."""

    delivery: Delivery
    entry: BatchEntry
    items: list[Any]
    started: float
    #: offset of a part's first item -> its blob (``worker.parts``: a chunk, or a run of one)
    blobs: dict[int, bytes] = field(default_factory=dict)
    #: offset of a part's first item -> its failed items
    failures: dict[int, int] = field(default_factory=dict)
    failed: int = 0
    remaining: int = 0  #: items without their final outcome, those waiting to retry included
    retrying: int = 0  #: items waiting for a retry (``worker.retries``)
    retried: int = 0  #: retries so far
    dropped: bool = False  #: given up (handed back, or its job ended): its retries are void
    retries_dropped: int = 0  #: items waiting to retry that were dropped when its job ended
    terminated: int = 0  #: items killed while running (their job was cancelled with terminate)
    let_go: bool = False  #: its job ended: acknowledged unrecorded, nothing more of it runs
    #: what its items (and its chunks) take decoded, estimated (taskfan.limits.decoded_size)
    decoded: int = 0
    chunk_size: int = 0  #: items per chunk, decided when it was taken (0: when admitted)


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
