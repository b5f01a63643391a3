"""Reading batches: new ones (XREADGROUP) and those whose lease lapsed on
another node (XAUTOCLAIM), each checked against its job's state, and telling
the producers of submit calls that this node took them.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import ResponseError

from taskfan import scripts
from taskfan.keys import GROUP, JobKeys, QueueKeys
from taskfan.options import CallMode
from worker.core.batches import Delivery
from worker.sources.streams.job_states import JobStates, job_key
from worker.sources.streams.redis_groups import lost_group

log = logging.getLogger(__name__)

#: the call mode of Executor.submit's entries (taskfan.options.CallMode.CALL)
_CALL = CallMode.CALL.value.encode()


def call_of(delivery: Delivery) -> tuple[bytes, bytes] | None:
    """(job id, batch index) of an entry of submit calls; None for any other."""
    fields = delivery.fields
    if not fields or fields.get(b"m") != _CALL or b"b" not in fields:
        return None
    return fields.get(b"j", b""), fields[b"b"]


class BatchReads(JobStates):
    def read(self, count: int, block_ms: int) -> list[Delivery]:
        """New batches for this node, waiting up to ``block_ms`` for one."""
        streams = [q.stream for q in self.queues]
        try:
            reply = self._reads.read(streams, self.node_id, count, block_ms)
        except ResponseError as exc:
            if not lost_group(exc):
                raise
            self._regroup(exc)
            return []
        out: list[Delivery] = []
        for stream, entries in reply:
            queue = self._by_stream[stream if isinstance(stream, bytes) else stream.encode()]
            out.extend(Delivery(queue, entry_id, fields) for entry_id, fields in entries)
        return self._check_jobs(out, new=True)

    def announce_calls(self, deliveries: list[Delivery]) -> None:
        """Tell the producers of submit calls (call mode) that this node took
        them (read or reclaimed), so their futures turn running: one script call
        per job, only for reads that hold calls. Advisory: a failure is logged,
        the batch runs. A node's reader leaves it to ``Announcements``
        (``worker.sources.streams.announcements``), which sends only those of
        its calls still unrecorded a moment later (what takes a call from a
        producer is the read itself: ``cancel_call.lua``)."""
        self.announce([d for d in deliveries if d.skip is None and call_of(d)])

    def announce(self, deliveries: list[Delivery], handed_back: bool = False) -> None:
        """``s=`` (taken) or ``h=`` (handed back unrun) events for these calls."""
        by_job: dict[bytes, list[bytes]] = {}
        for d in deliveries:
            call = call_of(d)
            if call is not None:
                by_job.setdefault(call[0], []).append(call[1])
        what = "handed back" if handed_back else "started"
        for job_id, batches in by_job.items():
            if job_key(job_id) is None:
                continue
            try:
                scripts.mark_started(self.client, JobKeys(job_id.decode()), batches, handed_back)
            except (ResponseError, ValueError) as exc:
                log.warning("job %s: could not mark batches %s %s: %s", job_id, batches, what, exc)

    def reclaim(self, count: int, min_idle_ms: int) -> list[Delivery]:
        """Batches other nodes held past their lease (crashed or cut off nodes)."""
        out: list[Delivery] = []
        for queue in self.queues:
            try:
                reply: Any = self.client.xautoclaim(
                    queue.stream, GROUP, self.node_id, min_idle_ms, "0-0", count=count
                )
            except ResponseError as exc:
                if not lost_group(exc):
                    raise
                self._regroup(exc)  # a new group holds nothing to reclaim
                return self._check_jobs(out)
            claimed = reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            counts = self._delivery_counts(queue, [entry_id for entry_id, _ in claimed])
            for entry_id, fields in claimed:
                out.append(
                    Delivery(queue, entry_id, fields or None, deliveries=counts.get(entry_id, 1))
                )

            for entry_id in deleted:  # Redis 7: deleted entries leave the PEL by themselves
                log.info("queue %s: reclaimed entry %s was deleted", queue.name, entry_id)
            if len(out) >= count:
                break
        return self._check_jobs(out)  # (announced by the reader: running again)

    def _delivery_counts(self, queue: QueueKeys, ids: list[bytes]) -> dict[bytes, int]:
        if not ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xpending_range(queue.stream, GROUP, min=entry_id, max=entry_id, count=1)
        counts: dict[bytes, int] = {}
        for reply in pipe.execute(raise_on_error=False):
            if isinstance(reply, Exception):  # the group vanished meanwhile: count 1
                continue
            for item in reply:
                counts[item["message_id"]] = int(item["times_delivered"])
        return counts
