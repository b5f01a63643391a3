"""Whether the jobs of the batches a node holds are still live: a cached answer.

A job cancelled (or gone: expired, purged) after a node fetched a batch of it
must not run what is left of that batch. Asking Redis before each chunk would
cost a round trip per chunk; instead the heartbeat asks, once per beat and in
one round trip, for the states of the jobs the node holds batches of
(``worker.services.heartbeat_duties``), and posts the ended ones to the main thread. They are kept
here, and the scheduler hands no chunk of theirs to the pool from then on
(``worker.core.scheduler``). So a cancel reaches fetched work within one heartbeat
interval; a chunk already in the pool runs, and ``record.lua`` refuses its
results. A job cancelled with ``terminate`` (a hard cancel) ends with the reason
``worker.core.batches.TERMINATED``: its chunks in the pool are killed too
(``worker.pool.pool_feed``).

Only batches taken in through the intake (``Scheduler.accept``: taskfan's
entries, whose jobs have a state in Redis) are tracked; a batch a source built
itself (``Scheduler.admit``) is its source's to watch.
"""

from __future__ import annotations

from collections.abc import Mapping

from worker.core.batches import Batch, key


class Liveness:
    def __init__(self) -> None:
        #: job id -> held batches of it (the heartbeat checks these jobs)
        self.jobs: dict[str, int] = {}
        #: job id -> why it ended, for jobs of batches still held
        self.ended: dict[str, str] = {}
        self._held: set[tuple[str, bytes]] = set()

    def hold(self, batch: Batch) -> None:
        """A batch read from a taskfan stream: its job is checked from now on."""
        self._held.add(key(batch.delivery))
        job = batch.entry.job_id
        self.jobs[job] = self.jobs.get(job, 0) + 1

    def release(self, batch: Batch) -> None:
        """The batch is let go: once no batch of its job is held, forget the job."""
        if key(batch.delivery) not in self._held:
            return
        self._held.discard(key(batch.delivery))
        job = batch.entry.job_id
        left = self.jobs.get(job, 0) - 1
        if left > 0:
            self.jobs[job] = left
        else:
            self.jobs.pop(job, None)
            self.ended.pop(job, None)

    def end(self, jobs: Mapping[str, str]) -> dict[str, str]:
        """Jobs found ended (job id -> why): those of held batches are remembered
        and returned."""
        held = {job: why for job, why in jobs.items() if job in self.jobs}
        self.ended.update(held)
        return held

    def why_ended(self, batch: Batch) -> str | None:
        """Why the batch's job ended, or None while it is live (or not tracked)."""
        if not self.ended or key(batch.delivery) not in self._held:
            return None
        return self.ended.get(batch.entry.job_id)
