"""Dead letters: list them, run them again (requeue), or drop them.

A batch is dead-lettered (``taskfan/lua/dead_letter.lua``) when it was delivered
more than ``max_deliveries`` times or could not be read. The node also records
its items as failed with the dead letter's reason (``record.lua``: the job's
``failed`` and ``batches_done`` counters move, and the job may finish).

Requeueing undoes that without erasing anything: recorded results never
change (readers may be reading them), so the batch runs again as a **retry
round** of its job, like ``Job.retry_failed`` but for this one batch, in the
same three steps (``taskfan/lua/_rounds.lua``):

1. check that each item of the entry still stands failed with the dead letter's
   reason (a retry may have run them again since; a node may have recorded the
   batch before it was dead-lettered: then there is nothing to run again);
2. ``requeue.lua`` (job slot): prepare the round, only if no other round opened
   since the check; the job is left as it was;
3. one MULTI in the queue slot: the entry goes back on the queue stream with the
   round's fields and leaves the dead-letter stream;
4. ``open_round.lua`` (job slot, idempotent): the items stop counting as
   failed, the job becomes active again, its keys lose their expiry. The node
   that records the entry opens the round too, if step 4 never ran.

With a keyring, the dead letter's own signature must hold (anyone can write to
the dead-letter stream: requeueing must not sign what they wrote), and the
entry goes back signed; without one, a signed dead letter is refused (nodes
would refuse its unsigned round).

Nodes record the round into ``<batch>.<round>``, which overlays the failures;
``failed``, ``batches_done`` and the job's state come out as if the batch had
run normally. A requeue cut short before step 3 leaves the job and the dead
letter as they were (run it again); cut short after it, the round opens when a
node records the entry. Once the round is open, requeue.lua answers the same
round for that dead letter again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from producer.ops import peek
from producer.ops.skipped import finite
from producer.records import JobRecords
from taskfan.connection import RedisClient, translate_errors
from taskfan.errors import ProtocolError, SignatureError, TaskfanError
from taskfan.keys import JobKeys, QueueKeys
from taskfan.meta import JobMeta, JobState
from taskfan.protocol import BatchEntry
from taskfan.sign_batch import SIGNATURE_FIELD
from taskfan.signing import Keyring

#: fields dead_letter.lua adds in front of the entry's own
_META_FIELDS = (b"reason", b"entry", b"at")


@dataclass(frozen=True)
class DeadLetter:
    id: str  #: id in the dead-letter stream
    queue: str
    reason: str
    at: float  #: when it was dead-lettered (seconds since the epoch)
    entry_id: str  #: its id in the queue stream, back then
    fields: dict[bytes, bytes]  #: the entry's own fields
    job_id: str | None
    batch: str | None  #: the results field it records into ("3", or "3.1" for a retry round)
    items: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "queue": self.queue, "job": self.job_id, "batch": self.batch,
            "items": self.items, "reason": self.reason, "at": self.at, "entry": self.entry_id,
        }  # fmt: skip


def _parse(queue: str, dead_id: Any, raw: dict[bytes, bytes]) -> DeadLetter:
    fields = {k: v for k, v in raw.items() if k not in _META_FIELDS}
    job_id = fields[b"j"].decode("utf-8", "replace") if b"j" in fields else None
    batch = fields[b"b"].decode("utf-8", "replace") if b"b" in fields else None
    if batch is not None and b"r" in fields:
        batch += "." + fields[b"r"].decode("utf-8", "replace")
    try:
        items: int | None = int(fields[b"n"])
    except (KeyError, ValueError):
        items = None
    at = finite(raw.get(b"at", b"0")) or 0.0  # JSON has no NaN: views dump it
    return DeadLetter(
        id=dead_id.decode() if isinstance(dead_id, bytes) else str(dead_id),
        queue=queue,
        reason=raw.get(b"reason", b"").decode("utf-8", "replace"),
        at=at,
        entry_id=raw.get(b"entry", b"").decode("utf-8", "replace"),
        fields=fields,
        job_id=job_id,
        batch=batch,
        items=items,
    )


def list_dead(
    r: RedisClient, queue: str, limit: int = 50, job_id: str | None = None
) -> list[DeadLetter]:
    """The newest dead letters of ``queue`` (of one job: among the newest 10,000)."""
    key = QueueKeys(queue).dead
    with translate_errors(f"reading the dead letters of queue {queue}"):
        raw: Any = r.xrevrange(key, count=limit if job_id is None else 10_000)
    letters = [_parse(queue, dead_id, fields) for dead_id, fields in raw]
    if job_id is not None:
        letters = [d for d in letters if d.job_id == job_id][:limit]
    return letters


def get(r: RedisClient, queue: str, dead_id: str) -> DeadLetter:
    with translate_errors(f"reading dead letter {dead_id} of queue {queue}"):
        try:
            raw: Any = r.xrange(QueueKeys(queue).dead, dead_id, dead_id)
        except redis.ResponseError:
            raw = []
    if not raw:
        raise TaskfanError(f"queue {queue}: no dead letter {dead_id}")
    return _parse(queue, raw[0][0], raw[0][1])


@dataclass(frozen=True)
class Requeued:
    dead_id: str
    entry_id: str  #: the entry's new id in the queue stream
    job_id: str
    batch: str  #: the results field the run records into
    items: int
    round: int  #: the job's retry round that runs it (0: the batch was never recorded)


def requeue(r: RedisClient, queue: str, dead_id: str, keyring: Keyring | None = None) -> Requeued:
    """Put a dead letter back on its queue, as a retry round of its job (see above).

    Raises TaskfanError, naming the dead letter, job and batch, when it cannot be
    run again (malformed, badly signed, job gone or cancelled, items ran again
    since, ...).
    """
    dead = get(r, queue, dead_id)
    where = f"dead letter {dead_id} of queue {queue}"
    entry = _trusted_entry(dead, where, keyring)
    where += f" (job {entry.job_id} batch {entry.field})"
    job = JobKeys(entry.job_id)
    with translate_errors(f"requeueing {where}"):
        meta, nonce = _job_meta(r, entry.job_id, where, keyring)
        records = JobRecords(entry.job_id, queue, nonce, keyring)
        recorded: Any = r.hget(job.results, entry.field)
        now = time.time()
        if recorded is None:
            # Never recorded (the job did not exist then, or recording failed): as it
            # was, signed again when signed (a new issue time: nodes refuse old ones).
            new_id = records.requeue_dead(r, dead_id, entry, now, as_was=dead.fields)
            return Requeued(dead_id, new_id, entry.job_id, entry.field, entry.count, 0)
        _check_still_failed(r, meta, entry, dead, where)
        round_ = records.prepare_requeue(r, dead_id, meta.retry_round, entry.count, entry.index)
        if round_ <= 0:
            raise TaskfanError(f"{where}: {_REFUSED.get(round_, f'refused ({round_})')}")
        offsets = entry.offsets if entry.offsets is not None else tuple(range(entry.count))
        again = dataclasses.replace(entry, round=round_, offsets=offsets)
        records.sign_round(r, round_, f"[{entry.index}]")
        new_id = records.requeue_dead(r, dead_id, again, now)
        opened = records.open_round(r, round_)
        if opened <= 0:
            raise TaskfanError(
                f"{where}: {_REFUSED.get(opened, f'refused ({opened})')}; the entry "
                "went back to the queue, and nodes will drop its results"
            )
    return Requeued(dead_id, new_id, entry.job_id, again.field, entry.count, round_)


#: why requeue.lua refused to open a round, by its answer
_REFUSED = {
    0: "another retry round opened meanwhile; try again",
    -1: "the job no longer exists",
    -2: "the job was cancelled or abandoned",
    -3: "the job is still being enqueued; try again once it is sealed",
}


def _trusted_entry(dead: DeadLetter, where: str, keyring: Keyring | None) -> BatchEntry:
    """The dead letter's batch entry, if its signature holds (with a keyring) and
    it parses; TaskfanError saying why it cannot run again otherwise."""
    if keyring is not None:
        try:
            keyring.verify_batch(dead.queue, dead.fields)
        except SignatureError as exc:
            raise TaskfanError(
                f"{where}: {exc}: no producer with the secret sent it; drop it"
            ) from None
    elif SIGNATURE_FIELD in dead.fields:
        raise TaskfanError(
            f"{where}: the batch is signed: requeueing it needs the secret (--secret-file, "
            "TASKFAN_SECRET), or nodes would refuse it"
        )
    try:
        return BatchEntry.parse(dead.fields, where)
    except ProtocolError as exc:
        raise TaskfanError(f"{exc}: it would be dead-lettered again; drop it instead") from None


def _job_meta(
    r: RedisClient, job_id: str, where: str, keyring: Keyring | None
) -> tuple[JobMeta, bytes]:
    """The meta of a job whose batch may run again (verified with a keyring), and
    its nonce."""
    raw: Any = r.hgetall(JobKeys(job_id).meta)
    if not raw:
        raise TaskfanError(
            f"{where}: the job no longer exists (expired or purged); drop the dead letter"
        )
    if keyring is not None:
        keyring.verify_job(job_id, raw)
    meta = JobMeta.parse(job_id, raw)
    if meta.fn_ref == "*":
        raise TaskfanError(
            f"{where}: the job holds Executor.submit calls, whose futures already "
            "got their errors; it cannot run again"
        )
    return meta, raw.get(b"nonce", b"")


def _check_still_failed(
    r: RedisClient, meta: JobMeta, entry: BatchEntry, dead: DeadLetter, where: str
) -> None:
    """Every item of the entry must stand failed with the dead letter's reason."""
    if meta.state in (JobState.CANCELLED, JobState.ABANDONED):
        raise TaskfanError(f"{where}: the job was {meta.state.value}")
    outcomes = peek.batch_outcomes(r, meta, entry.index)
    if outcomes is None:
        raise TaskfanError(f"{where}: the batch has no results, yet its retry has")
    offsets = entry.offsets if entry.offsets is not None else range(entry.count)
    first = outcomes[0].index if outcomes else entry.start
    for offset in offsets:
        outcome = outcomes[entry.start + offset - first]
        if outcome.ok or outcome.error is None or outcome.error.message != dead.reason:
            error = outcome.error
            since = "succeeded" if outcome.ok else f"failed with {error and error.type}"
            raise TaskfanError(
                f"{where}: item {outcome.index} {since} since it was dead-lettered (a node "
                "recorded the batch, or `taskfan retry` ran it again): nothing to run "
                "again; drop the dead letter"
            )


def drop(r: RedisClient, queue: str, dead_ids: Sequence[str]) -> int:
    """Delete dead letters (their items stay failed); returns how many were there."""
    with translate_errors(f"dropping dead letters of queue {queue}"):
        return int(r.xdel(QueueKeys(queue).dead, *dead_ids)) if dead_ids else 0


def drop_all(r: RedisClient, queue: str) -> int:
    key = QueueKeys(queue).dead
    with translate_errors(f"dropping dead letters of queue {queue}"):
        pipe = r.pipeline(transaction=True)
        pipe.xlen(key)
        pipe.delete(key)
        count, _ = pipe.execute()
    return int(count)


def requeue_all(r: RedisClient, queue: str, keyring: Keyring | None = None) -> list[Requeued | str]:
    """Requeue every dead letter of ``queue``, oldest first; per letter, what
    happened (a Requeued) or why not (a message)."""
    with translate_errors(f"reading the dead letters of queue {queue}"):
        raw: Any = r.xrange(QueueKeys(queue).dead)
    out: list[Requeued | str] = []
    for dead_id, _ in raw:
        text = dead_id.decode() if isinstance(dead_id, bytes) else str(dead_id)
        try:
            out.append(requeue(r, queue, text, keyring))
        except TaskfanError as exc:
            out.append(str(exc))
    return out
