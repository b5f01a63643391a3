"""A dequeued RQ job as the node tracks it (``RqJob``), the fields of its hash the
node reads, whether taskfan runs it at all (``describe``), which recording path
its outcome takes (``RqJob.fast``), and an outcome (``Outcome``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

from rq.defaults import DEFAULT_RESULT_TTL

#: outcome kinds ``run_job`` returns
OK, FAILED, RETRY = "ok", "failed", "retry"
#: the job hash fields a pool process gets: what it needs to run the job (data,
#: timeout) and to answer get_current_job() (origin, description, meta, retry counts;
#: times are left out: parsing them costs more than many a job)
CHILD_FIELDS = (
    b"data", b"timeout", b"origin", b"description", b"meta", b"number_of_retries",
    b"retries_left",
)  # fmt: skip
#: ... and the fields the node reads besides, to route each job (created_at and
#: group_id: to know the hash has what RQ's Job.to_dict always writes, see
#: RqJob.fast; rate_limit_key: RQ 3's rate limits, which RQ 2 never writes)
FETCHED = (
    *CHILD_FIELDS, b"result_ttl", b"failure_ttl", b"success_callback_name",
    b"failure_callback_name", b"stopped_callback_name", b"webhooks", b"repeats_left",
    b"created_at", b"group_id", b"rate_limit_key",
)  # fmt: skip
_INDEX = {name: i for i, name in enumerate(FETCHED)}
_RATE_LIMIT = _INDEX[b"rate_limit_key"]
#: the fetched fields RQ's Job.to_dict always writes (2.12 and later, and 3.x) (the others it always
#: writes, the node writes itself: status, started_at, ended_at, last_heartbeat,
#: worker_name)
_ALWAYS = itemgetter(*(_INDEX[name] for name in (
    b"data", b"created_at", b"group_id", b"success_callback_name", b"failure_callback_name",
    b"stopped_callback_name",
)))  # fmt: skip
#: the fetched fields that mean taskfan does not run the job, when set
_UNSUPPORTED = (
    (b"success_callback_name", "a callback (on_success={})"),
    (b"failure_callback_name", "a callback (on_failure={})"),
    (b"stopped_callback_name", "a callback (on_stopped={})"),
    (b"webhooks", "webhooks"),
    (b"repeats_left", "repeats (Repeat)"),
)
#: the longest TTL the node's own script sets (ten years)
MAX_FAST_TTL = 10 * 365 * 24 * 3600
_UNSUPPORTED_AT = itemgetter(*(_INDEX[name] for name, _ in _UNSUPPORTED))


@dataclass(eq=False, slots=True)
class RqJob:
    """One dequeued RQ job, as the node tracks it."""

    id: str
    queue: str
    #: the FETCHED fields of its hash when dequeued (a missing field: None)
    fields: tuple[bytes | None, ...]
    execution_id: str = field(default_factory=lambda: os.urandom(16).hex())  #: as uuid4().hex
    #: why taskfan will not run it (then it fails without running), if so
    unsupported: str | None = None
    #: when the node recorded its start (the Execution's created_at), once started
    started: float | None = None

    @property
    def member(self) -> str:
        return f"{self.id}:{self.execution_id}"  # Execution.composite_key

    def get(self, name: bytes) -> bytes | None:
        return self.fields[_INDEX[name]]

    def _int(self, name: bytes) -> int | None:
        """The field as a number; None when missing, and ValueError for what is
        not one (anyone may write into a job hash)."""
        value = self.get(name)
        return int(value) if value else None

    def _ttl(self, name: bytes) -> int | None:
        """A TTL finish.lua may pass to EXPIRE: -1 (for ever) to ten years;
        ValueError for another (RQ's own code then judges it)."""
        ttl = self._int(name)
        if ttl is not None and not -1 <= ttl <= MAX_FAST_TTL:
            raise ValueError(f"{name.decode()} {ttl} is out of range")
        return ttl

    @property
    def result_ttl(self) -> int:
        ttl = self._ttl(b"result_ttl")
        return DEFAULT_RESULT_TTL if ttl is None else ttl

    @property
    def failure_ttl(self) -> int | None:
        return self._ttl(b"failure_ttl")

    def fast(self, kind: str) -> bool:
        """Whether finish.lua may record this outcome (else RQ's own code does,
        which also judges a hash whose numbers are not numbers)."""
        try:
            return self._fast(kind)
        except ValueError:
            return False

    def _fast(self, kind: str) -> bool:
        data = self.fields[0]
        if not data or not data.startswith(b"x"):
            return False  # RQ's worker would write it back zlib-compressed (0x78...)
        if None in _ALWAYS(self.fields):
            return False  # RQ's worker would add the fields its Job.to_dict always writes
        if self.fields[_RATE_LIMIT]:
            return False  # RQ 3's code frees the job's rate-limit slot, and lets the next in
        if kind == OK:
            return self.result_ttl > 0 or self.result_ttl == -1
        if kind == FAILED:
            ttl = self.failure_ttl
            return (ttl is None or ttl > 0 or ttl == -1) and not self._int(b"retries_left")
        return False

    def item(self, serializer_name: str | None, allow: tuple[str, ...] = ()) -> tuple[Any, ...]:
        """What the pool process gets: see ``execute.run_job``."""
        return (self.id, self.fields[: len(CHILD_FIELDS)], serializer_name, allow)


def describe(queue: str, job_id: str, fields: Sequence[bytes | None]) -> RqJob:
    """An RqJob from its hash's FETCHED fields, with the reason taskfan will not run
    it, if any."""
    job = RqJob(job_id, queue, tuple(fields))
    if not any(_UNSUPPORTED_AT(job.fields)):
        return job
    reasons = [
        text.format(value.decode(errors="replace"))
        for (_, text), value in zip(_UNSUPPORTED, _UNSUPPORTED_AT(job.fields), strict=True)
        if value
    ]
    job.unsupported = (
        f"taskfan.UnsupportedRQJob: taskfan does not run RQ jobs with {' and '.join(reasons)} "
        f"(job {job_id}, queue {queue}): run this queue with RQ's own `rq worker`, or "
        "enqueue the job without them. See taskfan's docs/rq.md."
    )
    return job


class Outcome(NamedTuple):
    """What ``run_job`` returned for a job (or what the node says about it)."""

    kind: str
    payload: str | None
    started: float
    ended: float
    retry: tuple[int, list[int], bool] | None = None
