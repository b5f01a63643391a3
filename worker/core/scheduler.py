"""The node's bookkeeping: batches in, chunks out, results joined per batch.

No Redis, no processes, no threads: the node feeds it deliveries and chunk
results and sends what it returns, so every rule here is tested alone. What a
delivered entry must pass to become a batch is ``worker.core.intake``'s; what a
finished batch records is ``worker.core.recorder``'s; the batches and chunks
themselves are ``worker.core.batches``.

Rules:
- a batch is cut into chunks of the job's chunksize, else the node's, else one
  measured per function (``worker.core.chunk_sizing``);
- at most ``2 * processes`` chunks are in the pool (one running and one queued per
  process), so the pool stays busy across batch boundaries;
- chunks of a job with a ``hard_timeout`` hold one item and enter the pool only
  when a process is free, so their clock starts when they start;
- after a pool breaks, the chunks that were in it are suspects and run one at a
  time; a suspect that breaks the pool again is halved until the item that kills
  its process stands alone, and that item fails with the cause;
- an item the pool process says to retry waits in the node (``worker.core.retries``),
  not in the process; once due it goes back to the pool ahead of new chunks, in a
  chunk with the other items of its batch due then. The batch is done when every
  item has its final outcome. A node holds at most ``HELD_PER_PROCESS`` batches
  per process, so batches waiting for retries cannot pile up without end.

The rules live in one module each, ``Scheduler`` joins them: the batches held
and their cutting into chunks (``worker.core.held_books``), what goes to the pool
next and the re-cutting of chunks (``worker.core.chunk_queue``), what comes back
from it, suspects included (``worker.core.chunk_results``), and the batches of jobs
found ended (``worker.core.job_ends``).
"""

from __future__ import annotations

from worker.core.batches import Batch
from worker.core.chunk_queue import HELD_PER_PROCESS, READ_AHEAD_SECONDS
from worker.core.chunk_results import ChunkResults

__all__ = ["HELD_PER_PROCESS", "READ_AHEAD_SECONDS", "Batch", "Scheduler"]


class Scheduler(ChunkResults):
    """The node's books, one object: the batches held (``worker.core.held_books``),
    what goes to the pool next (``worker.core.chunk_queue``), what comes back
    (``worker.core.chunk_results``) and the batches of jobs found ended
    (``worker.core.job_ends``)."""
