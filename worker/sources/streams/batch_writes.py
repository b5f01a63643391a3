"""Recording finished batches (record.lua per batch) and acknowledging them
(XACK + XDEL, or moving them to the dead-letter stream), many batches in one
pipeline, results before acknowledgements.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError, OutOfMemoryError

from taskfan import keys, scripts
from taskfan.connection import RedisPipeline
from taskfan.cost import COST_TTL, encode_cost
from taskfan.keys import GROUP, JobKeys
from taskfan.pipelines import Sequenced
from worker.core.batches import Completed
from worker.sources.streams.redis_groups import NodeRedisBase, lost_group

log = logging.getLogger(__name__)


class BatchWrites(NodeRedisBase):
    def write(self, done: Sequence[Completed], now: float) -> None:
        """Record each batch (idempotent), then acknowledge and delete its entry.

        A batch with a ``dead_reason`` has its items recorded as failed (when its
        job is known) and its entry moved to the dead-letter stream instead.

        Order: results before acknowledgements. On one server one pipeline keeps
        it (and a waiter that sees the job end finds its entries acknowledged).
        On a Redis Cluster a pipeline gives no order between primaries, so the
        records go first, in a round trip of their own, and a batch whose record
        failed is not acknowledged: it runs again. A record refused for lack of
        memory raises OutOfMemoryError once the rest is written: the writer keeps
        the group and calls again, which records what is left (recording twice
        is harmless) and acknowledges only what is not yet.
        """
        recorded = [
            c for c in done if c.job_id and c.delivery.fields is not None and c.code is None
        ]
        costs = dict(c.cost for c in done if c.cost is not None)
        if self.recheck_recorded:
            for c in recorded:
                self._active.pop(c.job_id.encode(), None)
        while True:
            seq = Sequenced(self.client)
            for c in recorded:
                scripts.record_batch(
                    seq.pipe, JobKeys(c.job_id), c.field, c.entry, c.ok, c.failed, now
                )
            seq.barrier()  # a cluster only: the records run first
            if any(isinstance(r, NoScriptError) for r in seq.results):
                scripts.load_all(self.client)  # failed over, resharded
                continue
            unrecorded = {  # known here on a cluster only
                id(c)
                for c, r in zip(recorded, seq.results, strict=False)
                if isinstance(r, Exception)
            }
            acking = [c for c in done if not c.acked and id(c) not in unrecorded]
            spans = [self._acknowledge(seq.pipe, c, now) for c in acking]
            for fn_ref, cost in costs.items():
                seq.pipe.set(keys.cost(fn_ref), encode_cost(cost), ex=COST_TTL)
            sent = time.perf_counter()
            results = seq.execute(raise_on_error=False)
            if not seq.cluster:  # one round trip (on a cluster the records took one more)
                self.round_trips.observe(time.perf_counter() - sent)
            if not any(isinstance(r, NoScriptError) for r in results):
                break
            scripts.load_all(self.client)  # the server restarted or was flushed
        self._outcome(recorded, results[: len(recorded)])
        at = len(recorded)
        lost: Exception | None = None
        for c, span in zip(acking, spans, strict=True):
            errors = [r for r in results[at : at + span] if isinstance(r, Exception)]
            at += span
            # A lost group took the entry with it: nothing is left to acknowledge.
            lost = next((e for e in errors if lost_group(e)), lost)
            errors = [e for e in errors if not lost_group(e)]
            c.acked = not errors
            for error in errors:
                log.error("job %s batch %s: acknowledging failed: %s", c.job_id, c.field, error)
        if lost is not None:
            self._regroup(lost)
        for fn_ref, result in zip(costs, results[at:], strict=True):
            if isinstance(result, Exception):
                log.warning("publishing the cost of %s failed: %s", fn_ref, result)
        memory = [r for r in results[: len(recorded)] if isinstance(r, OutOfMemoryError)]
        if memory:
            raise memory[0]

    @staticmethod
    def _acknowledge(pipe: RedisPipeline, c: Completed, now: float) -> int:
        """Queue the acknowledgement (or dead-lettering) of ``c``; how many commands."""
        queue, entry_id, fields = c.delivery.queue, c.delivery.entry_id, c.delivery.fields
        if c.dead_reason is not None and fields is not None:
            scripts.dead_letter(pipe, queue, entry_id, fields, c.dead_reason, now)
            return 1
        pipe.xack(queue.stream, GROUP, entry_id)
        pipe.xdel(queue.stream, entry_id)
        return 2

    def _outcome(self, recorded: list[Completed], results: list[Any]) -> None:
        """Fill in each batch's ``code`` from what record.lua answered."""
        for c, result in zip(recorded, results, strict=True):
            if isinstance(result, OutOfMemoryError):
                c.code = None  # recorded when the writer calls again
            elif isinstance(result, Exception):
                log.error("job %s batch %s: recording failed: %s", c.job_id, c.field, result)
                c.code = None
            else:
                c.code = int(result)
                if c.code == scripts.RECORDED_LAST:
                    # Its next entry is a replay (worker.core.replays): look the job up again.
                    self._active.pop(c.job_id.encode(), None)
