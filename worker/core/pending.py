"""The chunks waiting for the pool, in the order they go, with their sums kept.

The node's loop weighs the work waiting on every turn (``Scheduler.batches_wanted``),
and a job at ``chunksize=1`` leaves thousands of chunks waiting: a pass over them
per turn made each chunk cost a pass over all the others. ``PendingChunks`` keeps,
as chunks come and go, how many wait, how many items each (job, function) has
among them and which batches they are of, so weighing them is a look per job
and finding the batches still busy a look per batch. Part of the node's
``Scheduler``; no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, KeysView

from worker.core.batches import Chunk

#: a job's items waiting, by (job id, function reference)
Waiting = dict[tuple[str, str], int]


class PendingChunks:
    """A deque of chunks (the operations the Scheduler uses), and its sums."""

    def __init__(self, chunks: Iterable[Chunk] = ()) -> None:
        self._chunks: deque[Chunk] = deque()
        self._items: Waiting = {}
        #: chunks waiting, by their batch's id
        self._batches: dict[int, int] = {}
        for chunk in chunks:
            self.append(chunk)

    # ------------------------------------------------------------ the deque

    def __len__(self) -> int:
        return len(self._chunks)

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def __iter__(self) -> Iterator[Chunk]:
        return iter(self._chunks)

    def __getitem__(self, index: int) -> Chunk:
        return self._chunks[index]

    def append(self, chunk: Chunk) -> None:
        self._chunks.append(chunk)
        self._add(chunk, 1)

    def appendleft(self, chunk: Chunk) -> None:
        self._chunks.appendleft(chunk)
        self._add(chunk, 1)

    def extendleft(self, chunks: Iterable[Chunk]) -> None:
        """As ``deque.extendleft``: the last of ``chunks`` ends up first."""
        for chunk in chunks:
            self.appendleft(chunk)

    def popleft(self) -> Chunk:
        chunk = self._chunks.popleft()
        self._add(chunk, -1)
        return chunk

    def keep(self, wanted: Callable[[Chunk], bool]) -> None:
        """Drop the chunks ``wanted`` says no to; the others keep their order."""
        self.replace([chunk for chunk in self._chunks if wanted(chunk)])

    def replace(self, chunks: Iterable[Chunk]) -> None:
        """These chunks wait now, in this order, in place of those before."""
        self._chunks.clear()
        self._items.clear()
        self._batches.clear()
        for chunk in chunks:
            self.append(chunk)

    # ------------------------------------------------------------ the sums

    def waiting(self) -> Waiting:
        """Items waiting, by (job id, function reference): a view, not a copy."""
        return self._items

    def batch_ids(self) -> KeysView[int]:
        """ids of the batches with chunks waiting: a view, not a copy."""
        return self._batches.keys()

    def _add(self, chunk: Chunk, sign: int) -> None:
        entry = chunk.batch.entry
        where = (entry.job_id, entry.fn_ref)
        left = self._items.get(where, 0) + sign * chunk.size
        if left:
            self._items[where] = left
        else:
            self._items.pop(where, None)
        batch = id(chunk.batch)
        chunks = self._batches.get(batch, 0) + sign
        if chunks:
            self._batches[batch] = chunks
        else:
            self._batches.pop(batch, None)
