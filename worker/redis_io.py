"""Every Redis command a worker node sends, in one place (no threads here).

Reads batches (XREADGROUP, XAUTOCLAIM for batches whose lease lapsed), records
finished batches (record.lua per batch, then XACK + XDEL, one pipeline for many
batches), refreshes leases, hands batches back, and publishes the node record.

A Redis restarted without persistence (or flushed, or a queue purged) comes
back with no queue stream, no consumer group and no scripts. Every command that
names the group answers ``NOGROUP`` then, and whichever path meets it first
(read, reclaim, lease refresh, hand back, acknowledgement) creates the groups
again and loads the scripts (``_regroup``): the batches the group held are gone
with it, so there is nothing to reclaim, refresh or acknowledge, and the node
goes on serving new jobs without a restart. NOSCRIPT is handled where scripts
run (``write``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import NoScriptError, OutOfMemoryError, ResponseError

from taskfan import keys, scripts
from taskfan.connection import RedisClient, RedisPipeline
from taskfan.cost import COST_TTL, encode_cost
from taskfan.keys import GROUP, JobKeys, QueueKeys
from taskfan.options import CallMode
from taskfan.pipelines import Sequenced
from worker.batches import TERMINATED, Completed, Delivery, JobFacts
from worker.stream_reads import stream_reads
from worker.unrunnable import Peer, parse_peer

log = logging.getLogger(__name__)

#: the call mode of Executor.submit's entries (taskfan.options.CallMode.CALL)
_CALL = CallMode.CALL.value.encode()


class NodeRedis:
    #: seconds a job found active is taken to be active without asking again
    ACTIVE_FOR = 1.0

    def __init__(
        self,
        client: RedisClient,
        queues: Sequence[str],
        node_id: str,
        clock: Callable[[], float] = time.monotonic,
        recheck_recorded: bool = False,
    ) -> None:
        self.client = client
        #: look a job up again on the next read once one of its batches is being
        #: recorded (a node with a secret: a copy of an entry read right after its
        #: job finished is then refused as a replay, see worker.replays)
        self.recheck_recorded = recheck_recorded
        self.clock = clock
        #: job id -> until when it counts as active (``clock`` time)
        self._active: dict[bytes, float] = {}
        #: job id -> the nonce in its meta, as last read
        self._nonces: dict[bytes, bytes] = {}
        #: jobs seen active and unsealed: the heartbeat ends them as abandoned
        #: when their producer's enqueue lease lapses (``abandon_lapsed``)
        self._enqueuing: set[str] = set()
        self._enqueuing_lock = threading.Lock()
        self.queues = [QueueKeys(name) for name in queues]
        self.node_id = node_id
        self._by_stream = {q.stream.encode(): q for q in self.queues}
        # Blocking reads get a connection of their own, so that a stopping node
        # can cut them short with CLIENT UNBLOCK instead of waiting them out.
        self._reads = stream_reads(client)

    def interrupt(self) -> None:
        """End a blocking read() now (it returns no batches). Thread-safe."""
        self._reads.interrupt()

    def prepare(self) -> None:
        """Create the consumer groups (reading from the start) and load the scripts."""
        for queue in self.queues:
            try:
                self.client.xgroup_create(queue.stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self.client.sadd(keys.QUEUES, queue.name)
        scripts.load_all(self.client)

    def _regroup(self, exc: Exception) -> None:
        """The stream or its group vanished (a purge, a FLUSHALL, a Redis restarted
        without persistence), maybe while we were blocked on it: create them again."""
        log.warning(
            "queue stream or consumer group missing (Redis restarted empty, flushed, or "
            "the queue purged); creating it again: %s",
            exc,
        )
        self.prepare()

    def read(self, count: int, block_ms: int) -> list[Delivery]:
        """New batches for this node, waiting up to ``block_ms`` for one."""
        streams = [q.stream for q in self.queues]
        try:
            reply = self._reads.read(streams, self.node_id, count, block_ms)
        except ResponseError as exc:
            if not _lost_group(exc):
                raise
            self._regroup(exc)
            return []
        out: list[Delivery] = []
        for stream, entries in reply:
            queue = self._by_stream[stream if isinstance(stream, bytes) else stream.encode()]
            out.extend(Delivery(queue, entry_id, fields) for entry_id, fields in entries)
        out = self._check_jobs(out)
        self._announce_calls(out)
        return out

    def _announce_calls(self, deliveries: list[Delivery]) -> None:
        """Tell the producers of submit calls (call mode) that this node took
        them, so their futures turn running: one script call per job, only for
        reads that hold calls. Advisory: a failure is logged, the batch runs."""
        by_job: dict[bytes, list[bytes]] = {}
        for d in deliveries:
            if d.skip is None and d.fields and d.fields.get(b"m") == _CALL and b"b" in d.fields:
                by_job.setdefault(d.fields.get(b"j", b""), []).append(d.fields[b"b"])
        for job_id, batches in by_job.items():
            if _job_key(job_id) is None:
                continue
            try:
                scripts.mark_started(self.client, JobKeys(job_id.decode()), batches)
            except (ResponseError, ValueError) as exc:
                log.warning("job %s: could not mark batches %s started: %s", job_id, batches, exc)

    def _check_jobs(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Mark batches of cancelled or vanished jobs.

        One round trip per read, but none for jobs found active in the last
        ``ACTIVE_FOR`` seconds: a job of many batches, or a stream of submits,
        costs one check a second. A batch of a job cancelled meanwhile is held
        until the heartbeat finds the job ended (``worker.liveness``): nothing
        more of it runs from then on, and record.lua drops the results of what
        ran before.
        """
        now = self.clock()
        job_ids = {d.fields[b"j"] for d in deliveries if d.fields and _job_key(d.fields.get(b"j"))}
        states = {j: b"active" for j in job_ids if self._active.get(j, -1.0) > now}
        unknown = sorted(job_ids - states.keys())
        if unknown:
            found = self._states(unknown)
            if len(self._active) > 10_000:
                self._active = {j: t for j, t in self._active.items() if t > now}
            for job_id, state in found.items():
                states[job_id] = state
                if state == b"active":
                    self._active[job_id] = now + self.ACTIVE_FOR
        out = []
        for d in deliveries:
            if not d.fields or not _job_key(d.fields.get(b"j")):
                out.append(d)  # parsing will dead-letter it
                continue
            job_id = d.fields[b"j"]
            state = states.get(job_id)
            facts = None
            if not isinstance(state, Exception):
                facts = JobFacts(state, self._nonces.get(job_id))
            why = _SKIP.get(state)
            out.append(dataclasses.replace(d, skip=why, job=facts))
        return out

    def _states(self, job_ids: Sequence[bytes]) -> dict[bytes, Any]:
        """Each job's state (None: the job no longer exists), one round trip.
        Jobs still enqueuing are remembered for ``abandon_lapsed``."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(_job_key(job_id) or "", "state", "sealed", "nonce", "terminate")
        replies = pipe.execute(raise_on_error=False)
        states: dict[bytes, Any] = {}
        if len(self._nonces) > 10_000:
            self._nonces.clear()
        for job_id, reply in zip(job_ids, replies, strict=True):
            if isinstance(reply, Exception):
                states[job_id] = reply
                continue
            state, sealed, nonce, terminate = reply
            # a hard cancel (cancel.lua): the node also kills what runs of the job
            states[job_id] = _TERMINATED if state == b"cancelled" and terminate == b"1" else state
            if nonce is None:
                self._nonces.pop(job_id, None)
            else:
                self._nonces[job_id] = nonce
            if state == b"active" and sealed != b"1":
                with self._enqueuing_lock:
                    self._enqueuing.add(job_id.decode())
        return states

    def ended(self, job_ids: Sequence[str]) -> dict[str, str]:
        """The jobs of ``job_ids`` that are no longer active (cancelled, abandoned,
        gone): job id -> why."""
        states = self._states([job_id.encode() for job_id in job_ids])
        out = {}
        for job_id, state in states.items():
            why = _SKIP.get(state)
            if why is not None:
                out[job_id.decode()] = why
        return out

    def abandon_lapsed(self) -> dict[str, str]:
        """End as abandoned the jobs seen enqueuing whose producer's lease lapsed
        (lua/abandon.lua; idempotent, so every node may try); forget those no
        longer enqueuing. Returns the jobs abandoned now or before: job id -> why.
        One script call per job still enqueuing, once per heartbeat."""
        with self._enqueuing_lock:
            jobs = sorted(self._enqueuing)
        out: dict[str, str] = {}
        for job_id in jobs:
            state = scripts.abandon_if_lapsed(self.client, JobKeys(job_id))
            if state == "enqueuing":
                continue
            with self._enqueuing_lock:
                self._enqueuing.discard(job_id)
            if state == "abandoned":
                out[job_id] = ABANDONED
        return out

    def reclaim(self, count: int, min_idle_ms: int) -> list[Delivery]:
        """Batches other nodes held past their lease (crashed or cut off nodes)."""
        out: list[Delivery] = []
        for queue in self.queues:
            try:
                reply: Any = self.client.xautoclaim(
                    queue.stream, GROUP, self.node_id, min_idle_ms, "0-0", count=count
                )
            except ResponseError as exc:
                if not _lost_group(exc):
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
        return self._check_jobs(out)

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
            results = seq.execute(raise_on_error=False)
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
            lost = next((e for e in errors if _lost_group(e)), lost)
            errors = [e for e in errors if not _lost_group(e)]
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
                    # Its next entry is a replay (worker.replays): look the job up again.
                    self._active.pop(c.job_id.encode(), None)

    def refresh(self, entries: dict[QueueKeys, list[Any]]) -> None:
        """Renew the leases of the batches this node holds (resets their idle time)."""
        self._claim(entries, None)

    def hand_back(
        self, entries: dict[QueueKeys, list[Any]], idle_ms: int, deliveries: int | None = None
    ) -> None:
        """Make batches this node will not finish reclaimable by others at once.
        ``deliveries``: set their delivery count to it (RETRYCOUNT), so that a
        batch this node never ran uses up no delivery."""
        self._claim(entries, idle_ms, deliveries)

    def _claim(
        self,
        entries: dict[QueueKeys, list[Any]],
        idle_ms: int | None,
        deliveries: int | None = None,
    ) -> None:
        """XCLAIM ... JUSTID the entries to this node again, with idle time ``idle_ms``
        (None: zero). A queue whose group was lost holds none of them any more."""
        pipe = self.client.pipeline(transaction=False)
        for queue, ids in entries.items():
            if ids:
                pipe.xclaim(
                    queue.stream, GROUP, self.node_id, 0, ids,
                    idle=idle_ms, retrycount=deliveries, justid=True,
                )  # fmt: skip
        errors = [r for r in pipe.execute(raise_on_error=False) if isinstance(r, Exception)]
        lost = [e for e in errors if _lost_group(e)]
        others = [e for e in errors if not _lost_group(e)]
        if lost:
            self._regroup(lost[0])
        if others:
            raise others[0]

    def peers(self) -> list[Peer]:
        """The other live nodes (their record has not expired), with the queues
        they serve and the functions they cannot run: two round trips."""
        listed: Any = self.client.zrange(keys.NODES, 0, -1)
        named = []
        pipe = self.client.pipeline(transaction=False)
        for raw in listed:
            node_id = raw.decode("utf-8", "replace")
            if node_id == self.node_id:
                continue
            try:
                pipe.hmget(keys.node(node_id), "queues", "cannot_run", "heartbeat_at")
            except ValueError:  # not a node id: someone else wrote it
                continue
            named.append(node_id)
        out = []
        for node_id, (queues, cannot_run, beat) in zip(named, pipe.execute(), strict=True):
            if beat is not None:  # else its record expired: that node is gone
                out.append(parse_peer(node_id, queues, cannot_run))
        return out

    def publish(self, record: dict[str, Any], ttl: float) -> None:
        """Write the node record and heartbeat; the record expires if the node dies."""
        key = keys.node(self.node_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping={k: str(v) for k, v in record.items()})
        pipe.expire(key, max(1, int(ttl)))
        pipe.zadd(keys.NODES, {self.node_id: time.time()})
        pipe.execute()

    def unpublish(self) -> None:
        """Remove the node record, and the consumer when Redis says it holds nothing.

        XGROUP DELCONSUMER drops the consumer's pending entries, so it must not
        run while any are left, handed back ones included: those wait there for
        other nodes to reclaim them.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(keys.node(self.node_id))
        pipe.zrem(keys.NODES, self.node_id)
        pipe.execute(raise_on_error=False)
        for queue in self.queues:
            try:
                left = self.client.xpending_range(
                    queue.stream, GROUP, min="-", max="+", count=1, consumername=self.node_id
                )
            except ResponseError as exc:
                if not _lost_group(exc):
                    raise
                continue  # no group, no consumer left to remove
            if not left:
                self.client.xgroup_delconsumer(queue.stream, GROUP, self.node_id)

    def queue_depths(self) -> dict[str, tuple[int, int, int]]:
        """Per queue served: batches waiting, in flight (pending), dead letters."""
        pipe = self.client.pipeline(transaction=False)
        for queue in self.queues:
            pipe.xlen(queue.stream)
            pipe.xpending(queue.stream, GROUP)
            pipe.xlen(queue.dead)
        replies = pipe.execute(raise_on_error=False)
        out = {}
        for i, queue in enumerate(self.queues):
            length, pending, dead = replies[3 * i : 3 * i + 3]
            length = length if isinstance(length, int) else 0
            in_flight = int(pending["pending"]) if isinstance(pending, dict) else 0
            out[queue.name] = (
                max(0, length - in_flight),
                in_flight,
                dead if isinstance(dead, int) else 0,
            )
        return out


def _lost_group(exc: Exception) -> bool:
    """Redis says the queue stream or its consumer group does not exist (NOGROUP),
    or that it vanished under a blocked read (UNBLOCKED)."""
    return isinstance(exc, ResponseError) and str(exc).startswith(("NOGROUP", "UNBLOCKED"))


ABANDONED = "the job was abandoned (its producer died mid-enqueue)"
#: the state of a job cancelled with terminate, as ``_states`` reports it
_TERMINATED = b"cancelled+terminate"
#: job state read from Redis -> why a batch of that job is skipped
_SKIP: dict[Any, str] = {
    None: "the job no longer exists",
    b"cancelled": "the job was cancelled",
    b"abandoned": ABANDONED,
    _TERMINATED: TERMINATED,
}


def _job_key(job_id: bytes | None) -> str | None:
    """The meta key of a job id read from an entry, or None when it cannot be one."""
    try:
        return JobKeys(job_id.decode("utf-8")).meta if job_id is not None else None
    except ValueError:  # UnicodeDecodeError too
        return None


def new_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"
