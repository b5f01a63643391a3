"""The node's side of its process pool: chunks in, chunk results out.

The main thread puts in the pool what the scheduler says to run (``submit``); a
pool callback posts ``ChunkDone(chunk, future)`` to the node's events, and the
main thread settles it (``done``): a result (its outcomes, and items to retry),
a dead process (the pool is rebuilt and the chunk becomes a suspect), or an
error the pool raised. ``enforce_deadlines`` kills the pool under a chunk past
its hard timeout. Each chunk's future is kept with the pool generation it went
to, so a broken pool's late callbacks are told apart from the new pool's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, cast

from taskfan.boundary import brief, describe
from taskfan.logs import batch_extra
from taskfan.settings import Settings
from worker.core.batches import Chunk, Completed
from worker.core.scheduler import Scheduler
from worker.node.messages import ChunkDone, Events
from worker.pool.child import ChunkResult, Escaped, run_chunk
from worker.pool.process_pool import EXIT_SECONDS, Pool
from worker.pool.process_setup import run_counted
from worker.pool.sending import UndecodableItems, pack
from worker.services.stats import NodeStats

if TYPE_CHECKING:
    from worker.core.batches import Delivery
    from worker.sources.base import Source

log = logging.getLogger(__name__)

#: seconds before a pool that refused a chunk, new as it was, is rebuilt and tried again
RETRY_SECONDS = 1.0


class PoolFeed:
    def __init__(
        self,
        settings: Settings,
        scheduler: Scheduler,
        stats: NodeStats,
        events: Events,
        owner: Callable[[Delivery], Source],
        complete: Callable[[Completed | None], None],
    ) -> None:
        self.settings = settings
        self.scheduler = scheduler
        self.stats = stats
        self.events = events
        #: the source a batch came from: it says what the pool checks, and hears
        #: when a chunk of it starts
        self._owner = owner
        #: called with what a settled chunk completed (a batch, or None)
        self._complete = complete
        self.pool: Pool | None = None
        #: the future of each chunk in the pool, and the pool generation it went to
        self._futures: dict[Chunk, tuple[Future[ChunkResult], int]] = {}
        self._last_cause = "cause unknown"
        #: max_tasks_per_child: chunks a pool process runs before it is replaced
        self._max_tasks = settings.max_tasks_per_child
        #: a process reached max_tasks_per_child: nothing more goes to this pool
        self._draining = False
        #: when to try a pool that refused chunks with none in it again (the node's clock)
        self.retry_at: float | None = None

    def start(self) -> None:
        settings = self.settings
        self.pool = Pool(settings.processes, settings.start_method, list(settings.paths))

    @property
    def restarts(self) -> int:
        return self.pool.restarts if self.pool else 0

    def shutdown(self, wait: bool) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=wait)

    def submit(self) -> None:
        """Put in the pool what the scheduler says to run now."""
        if self.pool is None:
            return
        self.retry_at = None
        self._reap()
        if self._draining:
            if self.scheduler.in_pool:
                return  # a process ran max_tasks_per_child chunks: let the pool empty
            self._recycle()
        self.scheduler.retries_due(self.scheduler.clock())
        rebuilt = False
        while (chunk := self.scheduler.next_chunk()) is not None:
            entry = chunk.batch.entry
            source = self._owner(chunk.batch.delivery)
            allow = source.allow  # (a runner of the source's own may check it itself)
            init = (entry.job_id, entry.initializer, entry.initargs) if entry.initializer else None
            args = (
                entry.fn_ref, entry.codec, entry.mode.value, pack(chunk.items()), entry.options,
                allow, self.settings.max_item_bytes, chunk.lo, chunk.retrying, entry.wrap,
                entry.bound, init,
            )  # fmt: skip
            try:
                if self._max_tasks:
                    future = self.pool.submit(run_counted, self._max_tasks, run_chunk, *args)
                else:
                    future = self.pool.submit(run_chunk, *args)
            except BaseException as exc:  # BrokenProcessPool; or what a pool breaking
                # as the chunk went in raised (CPython 3.11: OSError, handle is closed)
                self.scheduler.unsent(chunk)
                if rebuilt:  # a new pool refused at once too: try again a second later
                    self.retry_at = self.scheduler.clock() + RETRY_SECONDS
                    return
                if not self._broken_on_submit(exc):
                    return
                rebuilt = True
                continue
            self.scheduler.sent(chunk, self.scheduler.clock())
            source.started(chunk.batch.delivery, chunk.lo, chunk.hi)
            self._futures[chunk] = (future, self.pool.generation)
            future.add_done_callback(self._on_done(chunk))

    def next_deadline(self) -> float | None:
        """When the node's loop should call ``submit`` even if nothing happens:
        to try a pool that refused chunks again, or to kill the processes of a
        replaced pool that did not exit."""
        reap = self.pool.next_reap() if self.pool is not None else None
        times = [t for t in (self.retry_at, reap) if t is not None]
        return min(times, default=None)

    def _reap(self) -> None:
        assert self.pool is not None
        killed = self.pool.reap(self.scheduler.clock())
        if killed:
            log.warning(
                "killed %d pool processes that did not exit %.0f s after the node replaced "
                "them (max_tasks_per_child): does a task leave a thread running?",
                killed,
                EXIT_SECONDS,
            )

    def _broken_on_submit(self, exc: BaseException) -> bool:
        """The pool refused a chunk. With chunks of it still in it, their
        callbacks rebuild it; with none (a process died while the pool was idle:
        the OOM killer, a thread a task left behind), nothing else would, and
        the node would hold its batches forever: rebuild it now (True)."""
        assert self.pool is not None
        generation = self.pool.generation
        if any(sent == generation for _, sent in self._futures.values()):
            return False
        cause = self.pool.death_cause()
        log.warning(
            "a pool process died while idle (%s); rebuilding the pool (%s)", cause, brief(exc)
        )
        self._last_cause = cause
        self.pool.rebuild()
        return True

    def _on_done(self, chunk: Chunk) -> Callable[[Future[ChunkResult]], None]:
        """A pool callback (it runs in the pool's thread): hand the result to the loop."""
        return lambda future: self.events.put(ChunkDone(chunk, future))

    def done(self, chunk: Chunk, future: Future[ChunkResult]) -> None:
        """A chunk's future is done (its event came back to the main thread)."""
        assert self.pool is not None
        current = self._futures.get(chunk)
        if current is None or current[0] is not future:
            return  # a stale future: the chunk was settled or sent again meanwhile
        del self._futures[chunk]
        try:
            result = self._result(future)
            if result is None:  # its process had run max_tasks_per_child chunks: not run
                self._complete(self.scheduler.requeue(chunk))
                return
        except BrokenProcessPool:
            if current[1] == self.pool.generation:
                self._last_cause = self.pool.death_cause()
                log.warning(
                    "%s: a pool process died (%s); rebuilding the pool",
                    chunk.where(),
                    self._last_cause,
                    extra=_chunk_extra(chunk),
                )
                self.pool.rebuild()
            self._complete(self.scheduler.crashed(chunk, self._last_cause))
            return
        except UndecodableItems as exc:  # run alone, then halved, as a crash is
            self._complete(self.scheduler.crashed(chunk, str(exc)))
            return
        except BaseException as exc:  # whatever else the pool raised: never the node's end
            failure = describe(exc)
            log.warning(
                "%s: failed in the pool: %s: %s",
                chunk.where(),
                failure.type,
                failure.message,
                extra=_chunk_extra(chunk),
            )
            self._complete(
                self.scheduler.error(
                    chunk, failure.type, f"the node could not run this item: {failure.message}"
                )
            )
            return
        entry = chunk.batch.entry
        if result.unrunnable is not None:
            # This node cannot import the function: another node may (worker.core.unrunnable).
            self._complete(self.scheduler.cannot_run(chunk, *result.unrunnable))
            return
        if result.escaped:
            _log_escaped(chunk, result.escaped)
        self.stats.chunk(entry.fn_ref, chunk.size, result.seconds)
        if result.retries:
            self.stats.retried(chunk.batch.delivery.queue.name, entry.fn_ref, len(result.retries))
        self._complete(self.scheduler.done(chunk, result))  # retries due by its clock

    def _result(self, future: Future[Any]) -> ChunkResult | None:
        """The chunk's result (None: not run, its process was spent); with
        max_tasks_per_child, the pool is drained and replaced once the process
        that ran it has run that many chunks."""
        if not self._max_tasks:
            done: ChunkResult = future.result()
            return done
        result, runs = future.result()
        if runs >= self._max_tasks:
            self._draining = True
        return cast("ChunkResult | None", result)

    def _recycle(self) -> None:
        """Replace the pool, which is empty, once one of its processes ran
        max_tasks_per_child chunks.

        ProcessPoolExecutor's own max_tasks_per_child deadlocks on a backlog
        of queued calls (CPython gh-115634, unfixed in 3.11 to 3.13), and the
        node always keeps one. So the node does it: a process counts the chunks
        it runs (``worker.pool.process_setup.run_counted``) and hands back unrun any chunk it
        takes once it reached the limit (the node puts it back in front); each
        result says how many chunks its process has run, and once one reached
        the limit the node sends nothing more until the pool is empty, then
        starts a new one. No process runs more than max_tasks_per_child
        chunks; the others of the pool are replaced early with it.
        """
        assert self.pool is not None
        self._draining = False
        self.pool.recycle(self.scheduler.clock())

    def enforce_deadlines(self) -> None:
        """Kill the pool under a chunk past its hard timeout; rerun the others."""
        expired = self.scheduler.expired(self.scheduler.clock())
        if not expired or self.pool is None:
            return
        for chunk in expired:
            limit = chunk.batch.entry.options.hard_timeout
            message = f"the item ran past its hard timeout of {limit}s and its process was killed"
            log.warning("%s: %s", chunk.where(), message, extra=_chunk_extra(chunk))
            del self._futures[chunk]
            self._complete(self.scheduler.error(chunk, "HardTimeout", message))
        # Killing the pool fails every chunk in it; the others simply run again.
        self.pool.rebuild()
        for chunk in list(self.scheduler.in_pool):
            del self._futures[chunk]
            self._complete(self.scheduler.requeue(chunk))

    def terminate(self) -> None:
        """Kill the pool under the chunks of jobs cancelled with terminate (a hard
        cancel); rerun the other chunks that were in it, as after a hard timeout:
        they were not at fault, so they are neither crashes nor suspects."""
        doomed = self.scheduler.terminated()
        if not doomed or self.pool is None:
            return
        jobs = sorted({chunk.batch.entry.job_id for chunk in doomed})
        others = len(self.scheduler.in_pool) - len(doomed)
        log.warning(
            "job %s: cancelled with terminate: killing the pool under its %d running chunks "
            "(%d chunks of other jobs in it run again)",
            ", ".join(jobs), len(doomed), others,
            extra=_chunk_extra(doomed[0]),
        )  # fmt: skip
        for chunk in doomed:
            del self._futures[chunk]
            self._complete(self.scheduler.killed(chunk))
        self.pool.rebuild()
        for chunk in list(self.scheduler.in_pool):
            del self._futures[chunk]
            self._complete(self.scheduler.requeue(chunk))


def _chunk_extra(chunk: Chunk) -> dict[str, Any]:
    return batch_extra(chunk.batch.entry.job_id, chunk.batch.entry.field)


def _log_escaped(chunk: Chunk, escaped: tuple[Escaped, ...]) -> None:
    """One line per chunk whose items raised a BaseException that is not an
    Exception (a task calling sys.exit(), ...): recorded as their failures."""
    first = escaped[0]
    entry = chunk.batch.entry
    index = entry.start + (entry.offsets[first.offset] if entry.offsets else first.offset)
    more = f" (and {len(escaped) - 1} more items of this chunk)" if len(escaped) > 1 else ""
    log.warning(
        "job %s batch %s item %d: the task raised %s (%s), which fails the item only%s",
        entry.job_id,
        entry.field,
        index,
        first.type,
        first.message[:200],
        more,
        extra=_chunk_extra(chunk),
    )
