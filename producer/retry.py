"""``Job.retry_failed``: run a finished job's failed items again, in place.

A retry round gets a number from ``retry.lua`` (``scripts.open_retry_round``),
which makes the job active again; then one batch entry per batch that has
failed items goes on the queue, holding only those items' inputs (kept in the
result entries for this) and their offsets in the batch. Nodes record each
into ``<batch>.<round>``, which readers overlay on the batch's outcomes
(``producer.reader``). Items whose input was never decoded (a batch that could
not be read) cannot run again and stay failed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from producer import reader
from producer.records import batch_fields
from taskfan import scripts
from taskfan.codec import Codec
from taskfan.connection import translate_errors
from taskfan.errors import LimitExceeded, TaskfanError
from taskfan.keys import QueueKeys
from taskfan.limits import format_size
from taskfan.meta import JobMeta, JobState
from taskfan.outcomes import Outcome, ResultEntry, merged_outcomes
from taskfan.protocol import BatchEntry

if TYPE_CHECKING:
    from producer.job import Job

log = logging.getLogger(__name__)


def retry_failed(job: Job, raw_meta: dict[bytes, bytes]) -> int:
    """Queue a retry round of the job's failed items; returns how many."""
    meta = JobMeta.parse(job.id, raw_meta)
    keyring = job.client.keyring
    if keyring is not None:
        keyring.verify_meta(raw_meta, f"job {job.id}")
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
    _send(job, meta, plans)
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
                )
            )
    if left:
        log.warning("job %s: %d failed items kept no input and cannot be retried", meta.id, left)
    return plans


def _send(job: Job, meta: JobMeta, plans: list[BatchEntry]) -> None:
    """Open the round, then queue its entries (signed when there is a keyring)."""
    r: Any = job.client.redis
    with translate_errors(f"retrying job {job.id}"):
        batches = json.dumps([p.index for p in plans])
        items = sum(p.count for p in plans)
        round_ = scripts.open_retry_round(r, job.keys, items, len(plans), batches)
        if round_ <= 0:
            raise TaskfanError(f"job {job.id} changed meanwhile: it is {job.status}")
        stream = QueueKeys(meta.queue).stream
        pipe = r.pipeline(transaction=False)
        for plan in plans:
            entry = dataclasses.replace(plan, round=round_)
            pipe.xadd(stream, batch_fields(entry, meta.queue, job.client.keyring))
        pipe.execute()


def _input_of(outcome: Outcome) -> Any:
    assert outcome.error is not None and outcome.error.retry_input is not None
    return outcome.error.retry_input[0]
