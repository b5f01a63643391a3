"""The one writer of a job's records: its meta, its counters, its batch entries,
and the result entries a producer records itself.

``JobSpec`` is what a job is (queue, function, codec, call mode, sizes, task
options) and gives its meta hash (fields: ``taskfan.meta``). ``JobRecords``
writes one job: it creates the job (meta signed with a keyring, listed in its
queue's index), counts and queues its batch entries (signed: issue time and the
job's nonce), records results the producer knows itself, seals the job (totals
signed), and writes retry rounds (prepared, signed, queued, opened:
``taskfan/lua/_rounds.lua``). Every producer path goes through it:
``producer.enqueue`` (``Client.map``, streaming or not), ``Executor.submit``
(``producer.executor``), retry rounds (``producer.retry``) and requeued dead
letters (``producer.ops.deadletters``); tests/test_job_records.py checks that no
other module writes these records. Keys come from ``taskfan.keys``, scripts
from ``taskfan.scripts``, signatures from ``taskfan.signing``.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from producer import sizing
from producer.lease import lease_field
from taskfan import keys, scripts
from taskfan.codec import Codec
from taskfan.connection import RedisClient, RedisPipeline
from taskfan.keys import JobKeys, QueueKeys
from taskfan.options import DEFAULT_OPTIONS, CallMode, TaskOptions
from taskfan.pipelines import Sequenced
from taskfan.protocol import BatchEntry
from taskfan.sign_meta import META_SIGNATURE_FIELD, TOTALS_SIGNATURE_FIELD
from taskfan.signing import Keyring

#: jobs a queue's index lists (for status and purge); older ids drop out of it
JOBS_INDEXED = 10_000


def new_job_id() -> str:
    return secrets.token_hex(8)


def index_job(pipe: RedisPipeline, queue: QueueKeys, job_id: str, now: float) -> None:
    """List the job in its queue's index, which keeps the newest JOBS_INDEXED
    jobs: it would otherwise grow by one id per job forever (jobs expire, the
    index does not)."""
    pipe.zadd(queue.jobs, {job_id: now})
    pipe.zremrangebyrank(queue.jobs, 0, -JOBS_INDEXED - 1)


def new_nonce() -> str:
    """A job's nonce: signed into its meta and into each of its signed batch
    entries, so a node tells a batch of this job from one of an earlier job that
    had its id (a replay after the job expired and its meta was written again)."""
    return secrets.token_hex(8)


def batch_fields(
    entry: BatchEntry, queue: str, keyring: Keyring | None, nonce: str | bytes, now: float
) -> dict[str, Any]:
    """The fields to XADD for ``entry`` on ``queue``: signed when there is a keyring,
    with the issue time ``t`` and the job's ``nonce`` (``u``), which nodes check
    to bound replays (``worker.core.entry_checks``)."""
    fields = entry.fields()
    if keyring is None:
        return fields
    nonce = nonce.decode("ascii", "replace") if isinstance(nonce, bytes) else nonce
    return keyring.sign_batch(queue, {**fields, "t": int(now), "u": nonce})


def sign_totals(meta: dict[str, Any], keyring: Keyring | None) -> dict[str, Any]:
    """A sealed job's meta, with the signature of its totals when there is a keyring."""
    if keyring is not None:
        meta[TOTALS_SIGNATURE_FIELD.decode()] = keyring.sign_totals(
            meta["id"], meta["nonce"], meta["batches"], meta["total"]
        )
    return meta


def sign_meta(meta: dict[str, Any], keyring: Keyring | None) -> dict[str, Any]:
    """A job's meta hash, with its signature when there is a keyring."""
    if keyring is not None:
        meta[META_SIGNATURE_FIELD.decode()] = keyring.sign_meta(meta)
    return meta


@dataclass(frozen=True)
class JobSpec:
    queue: str
    fn_ref: str
    codec: Codec
    mode: CallMode
    batch_size: int
    chunksize: int  #: 0: the node decides
    result_ttl: int
    options: TaskOptions = DEFAULT_OPTIONS
    #: with batch_size RAMP (``producer.enqueue``), the size the ramp stops at
    ramp_max: int = sizing.RAMP_MAX_UNKNOWN
    #: a batch whose encoding is larger is split, and later batches are made
    #: smaller (automatic sizes only; 0: never)
    split_bytes: int = 0
    #: how the node builds the callable from fn_ref, its bound state, and what
    #: status shows for it (``producer.callables``); empty for a plain function
    wrap: str = ""
    bound: bytes = b""
    label: str = ""
    #: the job's initializer reference and its encoded arguments ("": none)
    initializer: str = ""
    initargs: bytes = b""

    def meta(self, job_id: str, now: float, nonce: str) -> dict[str, Any]:
        return {
            "id": job_id,
            "nonce": nonce,
            "queue": self.queue,
            "fn": self.fn_ref,
            "codec": self.codec.name,
            "mode": self.mode.value,
            "state": "active",
            "sealed": 0,
            "total": 0,
            "batches": 0,
            "ok": 0,
            "failed": 0,
            "batches_done": 0,
            "batch_size": self.batch_size,
            **({"ramp_max": self.ramp_max} if self.batch_size == 0 else {}),
            "chunksize": self.chunksize,
            "result_ttl": self.result_ttl,
            "created_at": repr(now),
            "options": self.options.encode(),
            **({"wrap": self.wrap, "bound": self.bound} if self.wrap else {}),
            **({"label": self.label} if self.label else {}),
            **({"init": self.initializer, "initargs": self.initargs} if self.initializer else {}),
        }


class JobRecords:
    """Writes one job's records; ``nonce`` is the job's (signed into its meta and
    each signed entry), ``keyring`` the producer's (None: nothing is signed).

    Methods that take a pipeline queue their writes on it (the caller sends it);
    those that take a client write at once and return what Redis answered."""

    def __init__(
        self, job_id: str, queue: str, nonce: str | bytes, keyring: Keyring | None
    ) -> None:
        self.id = job_id
        self.queue_name = queue
        #: a nonce read back from the meta comes as bytes
        self.nonce = nonce.decode("ascii", "replace") if isinstance(nonce, bytes) else nonce
        self.keyring = keyring
        self.job = JobKeys(job_id)
        self.queue = QueueKeys(queue)

    # ----------------------------------------------------------------- the job

    def create(
        self,
        seq: Sequenced,
        spec: JobSpec,
        now: float,
        *,
        lease: float | None = None,
        sealed: tuple[int, int] | None = None,
    ) -> None:
        """Write the job's meta and list it in its queue's index and the set of
        queues, then a barrier: the job exists before an entry names it (a node
        that ran a batch of a job it cannot find would drop the results; a
        cluster only, see taskfan.pipelines); use ``seq.pipe`` anew after.

        Unsealed (``sealed`` None), more batches come and the job lives while its
        producer renews ``lease`` (``producer.lease``). Sealed, ``(total,
        batches)``, it is born whole, its totals signed; with no batch at all it is
        born finished and expires after its result TTL."""
        meta = sign_meta(spec.meta(self.id, now, self.nonce), self.keyring)
        pipe: Any = seq.pipe
        if sealed is None:
            assert lease is not None, "an unsealed job lives by its enqueue lease"
            meta.update(lease_field(lease))
        else:
            total, batches = sealed
            meta.update(sealed=1, total=total, batches=batches)
            sign_totals(meta, self.keyring)
            if not batches:
                meta.update(state="finished", finished_at=repr(now))
        pipe.hset(self.job.meta, mapping=meta)
        if sealed is not None and not sealed[1] and spec.result_ttl:
            pipe.expire(self.job.meta, spec.result_ttl)
        index_job(pipe, self.queue, self.id, now)
        pipe.sadd(keys.QUEUES, self.queue_name)
        seq.barrier(raise_on_error=True)

    def count(self, pipe: RedisPipeline, items: int, batches: int) -> None:
        """Count batches added to an unsealed job (its ``total`` and ``batches``)."""
        pipe.hincrby(self.job.meta, "total", items)
        pipe.hincrby(self.job.meta, "batches", batches)

    def seal(self, client: RedisClient, total: int, batches: int, now: float) -> Any:
        """No more batches: fix the job's totals, signed with a keyring
        (``seal.lua``; returns its answer, e.g. ``scripts.JOB_ABANDONED``)."""
        signature = None
        if self.keyring is not None:
            signature = self.keyring.sign_totals(self.id, self.nonce, batches, total)
        return scripts.seal_job(client, self.job, total, batches, now, signature)

    # ----------------------------------------------------------------- entries

    def fields(self, entry: BatchEntry, now: float) -> dict[str, Any]:
        """The stream fields of ``entry``, signed with a keyring."""
        return batch_fields(entry, self.queue_name, self.keyring, self.nonce, now)

    def queue_entry(self, pipe: RedisPipeline, entry: BatchEntry, now: float) -> None:
        """Queue ``entry`` on the job's queue stream (XADD: the reply is its id)."""
        target: Any = pipe
        target.xadd(self.queue.stream, self.fields(entry, now))

    def result_entry(self, index: int, codec: str, entry: bytes) -> bytes:
        """A result entry the producer records itself (``record``), sealed with a
        keyring as nodes seal theirs (``taskfan.sign_result``)."""
        if self.keyring is None:
            return entry
        return self.keyring.seal_result(self.id, index, codec, entry)

    def record(
        self, client: RedisClient | RedisPipeline, index: int, entry: bytes, failed: int, now: float
    ) -> Any:
        """Record batch ``index``'s result entry (from ``result_entry``), whose
        items all failed (items refused at enqueue, a call cancelled before any
        node took it), through ``record.lua`` as a node would; a pipeline calls
        the script by SHA (``scripts.load_all`` first)."""
        return scripts.record_batch(client, self.job, index, entry, 0, failed, now)

    # ----------------------------------------------------------------- retry rounds

    def prepare_retry(self, client: RedisClient, items: int, entries: int, batches: str) -> int:
        """Prepare a retry round of ``entries`` entries (``batches``: the JSON list
        of their batch indexes); the round's number, or why not (``retry.lua``)."""
        return int(scripts.prepare_retry_round(client, self.job, items, entries, batches))

    def prepare_requeue(
        self, client: RedisClient, dead_id: str, seen_round: int, items: int, index: int
    ) -> int:
        """Prepare the round that runs dead letter ``dead_id`` again (batch
        ``index``); the round's number, or why not (``requeue.lua``)."""
        return int(
            scripts.prepare_requeue_round(client, self.job, dead_id, seen_round, items, index)
        )

    def sign_round(self, client: RedisClient, round_: int, batches: str) -> None:
        """With a keyring, sign prepared round ``round_`` (``rsig:<round>``),
        before its entries are queued."""
        if self.keyring is not None:
            signature = self.keyring.sign_round(self.id, self.nonce, round_, batches)
            scripts.sign_round(client, self.job, round_, signature)

    def queue_round(
        self, client: RedisClient, entries: Sequence[BatchEntry], round_: int, now: float
    ) -> None:
        """Queue every entry of round ``round_``, or none: one MULTI (one slot)."""
        pipe: Any = client.pipeline(transaction=True)
        for entry in entries:
            self.queue_entry(pipe, dataclasses.replace(entry, round=round_), now)
        pipe.execute()

    def requeue_dead(
        self,
        client: RedisClient,
        dead_id: str,
        entry: BatchEntry,
        now: float,
        as_was: dict[bytes, bytes] | None = None,
    ) -> str:
        """Put dead letter ``dead_id`` back on the queue stream as ``entry`` and
        out of the dead-letter stream: one MULTI (one slot); the new entry's id.

        Unsigned, ``as_was`` (the dead letter's own fields), when given, goes back
        unchanged; signed, the entry is signed again (a new issue time: nodes
        refuse old ones). When another requeue of the same dead letter won the
        race, the entry is queued twice; the second run's recording changes
        nothing (set-if-absent)."""
        fields: dict[Any, Any] = (
            as_was if self.keyring is None and as_was is not None else self.fields(entry, now)
        )
        pipe: Any = client.pipeline(transaction=True)
        pipe.xadd(self.queue.stream, fields)
        pipe.xdel(self.queue.dead, dead_id)
        new_id, _ = pipe.execute()
        return new_id.decode() if isinstance(new_id, bytes) else str(new_id)

    def open_round(self, client: RedisClient, round_: int) -> int:
        """Open prepared round ``round_`` once its entries are queued (idempotent);
        ``open_round.lua``'s answer."""
        return int(scripts.open_round(client, self.job, round_))
