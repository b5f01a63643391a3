"""What a producer writes for a job, besides its items' payloads.

``JobSpec`` is what a job is (queue, function, codec, call mode, sizes, task
options) and gives its meta hash (fields: ``taskfan.meta``); ``sign_meta`` and
``batch_fields`` sign the meta hash and each batch entry when the producer has a
keyring (``taskfan.signing``); ``index_job`` lists a new job in its queue's index.
``producer.enqueue`` (``Client.map``), ``Executor.submit`` and retry rounds
(``producer.retry``) write through these.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from producer import sizing
from taskfan.codec import Codec
from taskfan.connection import RedisPipeline
from taskfan.keys import QueueKeys
from taskfan.options import DEFAULT_OPTIONS, CallMode, TaskOptions
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
