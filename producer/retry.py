"""``Job.retry_failed``: run a finished job's failed items again, in place.

A retry round holds one batch entry per batch that has failed items, with only
those items' inputs (kept in the result entries for this) and their offsets in
the batch. Nodes record each into ``<batch>.<round>``, which readers overlay on
the batch's outcomes (``producer.reader``). Items whose input was never decoded
(a batch that could not be read) cannot run again and stay failed.

The round's entries go to the queue slot and the job's counters live in the
job slot, and no script spans both, so a round opens in three steps
(taskfan/lua/_rounds.lua): ``retry.lua`` prepares it (the job stays finished,
its failures counted); one MULTI queues all its entries; ``open_round.lua``
opens it (the items stop counting as failed, the job is active again). The
first node that records one of its entries opens it too, if the producer has
not. A crash or a Redis error between any two steps leaves the job as it was
(and retriable again) or, once the entries are queued, fully in its new round;
never active with no entries coming. A round superseded by another one opened
meanwhile is void: nodes drop its results.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from producer import reader
from producer.handle import JobHandle
from producer.records import JobRecords
from taskfan import scripts
from taskfan.codec import Codec
from taskfan.connection import translate_errors
from taskfan.errors import JobNotFound, LimitExceeded, TaskfanError
from taskfan.limits import format_size
from taskfan.meta import JobMeta, JobState
from taskfan.outcomes import Outcome, ResultEntry, merged_outcomes
from taskfan.protocol import BatchEntry

log = logging.getLogger(__name__)


def retry_failed(job: JobHandle, raw_meta: dict[bytes, bytes]) -> int:
    """Queue a retry round of the job's failed items; returns how many."""
    meta = JobMeta.parse(job.id, raw_meta)
    keyring = job.client.keyring
    if keyring is not None:
        keyring.verify_job(job.id, raw_meta)
    if meta.state is not JobState.FINISHED:
        raise TaskfanError(f"job {job.id} is {meta.status}: only a finished job can be retried")
    if meta.fn_ref == "*":
        raise TaskfanError(f"job {job.id} holds Executor.submit calls, which cannot be retried")
    codec = job.client.result_codec(job.id, meta.codec, job.codec)
    plans = _plans(meta, codec, (entries for entries, _ in reader.in_order(job, None)))
    if not plans:
        return 0
    limit = job.client.limits.max_batch_bytes
    for plan in plans:
        if len(plan.payload) > limit:
            raise LimitExceeded(
                f"job {job.id} batch {plan.index}: its failed items encode to "
                f"{format_size(len(plan.payload))}, over max_batch_bytes "
                f"({format_size(limit)})"
            )
    _send(job, meta, raw_meta.get(b"nonce", b""), plans)
    return sum(p.count for p in plans)


def _plans(meta: JobMeta, codec: Codec, batches: Iterable[list[ResultEntry]]) -> list[BatchEntry]:
    """Per batch with failed items that kept their input, the entry that runs them
    again (its round still 0: the round is numbered when it opens)."""
    plans: list[BatchEntry] = []
    left = 0
    for index, entries in enumerate(batches):
        failed = [o for o in merged_outcomes(entries, codec, f"job {meta.id}") if not o.ok]
        kept = [o for o in failed if o.error is not None and o.error.retry_input is not None]
        left += len(failed) - len(kept)
        if kept:
            start = entries[0].start
            plans.append(
                BatchEntry(
                    job_id=meta.id,
                    index=index,
                    start=start,
                    count=len(kept),
                    fn_ref=meta.fn_ref,
                    codec=codec.name,
                    mode=meta.mode,
                    chunksize=meta.chunksize,
                    payload=codec.dumps([_input_of(o) for o in kept]),
                    options=meta.options,
                    offsets=tuple(o.index - start for o in kept),
                    wrap=meta.wrap,
                    bound=meta.bound,
                    initializer=meta.initializer,
                    initargs=meta.initargs,
                )
            )
    if left:
        log.warning("job %s: %d failed items kept no input and cannot be retried", meta.id, left)
    return plans


def _send(job: JobHandle, meta: JobMeta, nonce: bytes, plans: list[BatchEntry]) -> None:
    """Prepare the round, sign it (``rsig:<round>``, with a keyring), queue its
    entries (signed too) in one MULTI, then open it (see the module's docstring)."""
    r = job.client.redis
    records = JobRecords(job.id, meta.queue, nonce, job.client.keyring)
    with translate_errors(f"retrying job {job.id}"):
        batches = json.dumps([p.index for p in plans])
        items = sum(p.count for p in plans)
        round_ = records.prepare_retry(r, items, len(plans), batches)
        _check_round(job, round_, "this retry was not sent")
        records.sign_round(r, round_, batches)
        records.queue_round(r, plans, round_, time.time())  # every entry, or none
        opened = records.open_round(r, round_)
        _check_round(job, opened, "nodes will drop the results of this retry's batches")


def _check_round(job: JobHandle, answer: int, consequence: str) -> None:
    """What prepare_retry_round or open_round answered, when it is not a round."""
    if answer == scripts.JOB_GONE:
        raise JobNotFound(job.id)
    if answer <= 0:
        raise TaskfanError(
            f"job {job.id} changed meanwhile (another retry round opened, or it is no "
            f"longer finished): {consequence}"
        )


def _input_of(outcome: Outcome) -> Any:
    assert outcome.error is not None and outcome.error.retry_input is not None
    return outcome.error.retry_input[0]
