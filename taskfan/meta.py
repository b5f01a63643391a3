"""A job's record in Redis: its meta hash (``JobMeta``) and its events stream.

Meta hash (key ``JobKeys.meta``): the job's queue, function, codec, call mode,
task options, sizes, counters and ``state`` (``JobState``); after retries,
``retry_round`` and ``round:<n>``, the JSON list of the batches round n retries.
The fields are listed in docs/architecture.md. ``JobMeta.parse`` raises
ProtocolError naming the job and the field.

Events stream entries (key ``JobKeys.events``): ``b=<results field>`` when a
batch or a retry of some of its items is recorded, ``sealed=<batches>`` when the
producer has sent every batch, ``end=<state>`` when the job reaches a final
state.

While a producer enqueues (not sealed), ``lease_until`` says until when its
lease runs (lua/lease.lua); once it lapses the job ends ``abandoned``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskfan.callables import WRAPS
from taskfan.errors import ProtocolError
from taskfan.fields import MAX_NUMBER, text, whole_numbers
from taskfan.options import DEFAULT_OPTIONS, CallMode, TaskOptions

#: the largest counter (what HINCRBY can hold) and time (year 5138); none is negative
_MOST: dict[type, float] = {int: MAX_NUMBER, float: 1e11}


class JobState(str, enum.Enum):
    ACTIVE = "active"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    #: its producer stopped renewing the enqueue lease before sealing it (killed
    #: mid-enqueue): nodes skip its remaining batches (lua/abandon.lua)
    ABANDONED = "abandoned"


@dataclass(frozen=True)
class JobMeta:
    """A job's meta hash, parsed."""

    id: str
    queue: str
    fn_ref: str
    codec: str
    mode: CallMode
    state: JobState
    sealed: bool
    total: int
    batches: int
    ok: int
    failed: int
    batches_done: int
    batch_size: int
    chunksize: int
    result_ttl: int
    created_at: float
    finished_at: float | None
    options: TaskOptions = DEFAULT_OPTIONS
    #: the last retry round opened (Job.retry_failed, requeued dead letters); 0: none.
    #: Numbers may skip one prepared but never opened (taskfan/lua/_rounds.lua)
    retry_round: int = 0
    #: batches added after the job's own: retries and requeued dead letters
    retry_batches: int = 0
    #: with automatic sizes (batch_size 0), the largest batch the ramp 1, 2, 4, ...
    #: grows to; 0: not recorded (a fixed size, or a job from an older release)
    ramp_max: int = 0
    #: how many retry rounds opened (round numbers may skip: see ``retry_round``)
    rounds: int = 0
    #: batch index -> the results fields of its retries ("<index>.<round>"), in round order
    overlays: Mapping[int, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    #: while enqueuing, until when (the server's clock) its producer's lease runs
    lease_until: float | None = None
    #: how nodes build the callable from fn_ref, and its bound state
    #: (``taskfan.callables``); what people read for it (``label``, "" : fn_ref)
    wrap: str = ""
    bound: bytes = b""
    label: str = ""
    #: the job's initializer ("": none) and the codec's encoding of its arguments
    #: (``worker.pool.process_setup``): retry rounds send them again
    initializer: str = ""
    initargs: bytes = b""

    @property
    def function(self) -> str:
        """The function as status, inspect and the dashboard show it."""
        return self.label or self.fn_ref

    @property
    def lease_lapsed(self) -> bool:
        """An unsealed job whose enqueue lease has passed, by this machine's clock
        (abandon.lua decides by the server's)."""
        return (
            self.state is JobState.ACTIVE
            and not self.sealed
            and self.lease_until is not None
            and self.lease_until < time.time()
        )

    @property
    def done(self) -> int:
        return self.ok + self.failed

    @property
    def cancelled(self) -> int:
        """Items with no outcome of a job that was cancelled or abandoned (never
        run, let go, or killed by a hard cancel): they read as cancelled outcomes
        (``taskfan.outcomes.cancelled``). 0 while the job is active or finished."""
        if self.state not in (JobState.CANCELLED, JobState.ABANDONED):
            return 0
        return max(0, self.total - self.done)

    @property
    def counts(self) -> tuple[int, int, int]:
        """Items done, failed (of those), cancelled."""
        return self.done, self.failed, self.cancelled

    @property
    def status(self) -> str:
        """A human word for where the job is: enqueuing, queued, running, finished,
        cancelled, abandoned."""
        if self.state is not JobState.ACTIVE:
            return self.state.value
        if not self.sealed:
            return "enqueuing"
        return "running" if self.batches_done else "queued"

    def result_fields(self, index: int) -> list[str]:
        """The results fields that hold batch ``index``'s outcomes: the batch's own
        entry, then its retries', which overlay it in this order."""
        return [str(index), *self.overlays.get(index, ())]

    @classmethod
    def parse(cls, job_id: str, raw: Mapping[bytes, bytes]) -> JobMeta:
        """Parse a meta hash; raises ProtocolError naming the job and the field."""
        where = f"job {job_id} meta"
        fields = dict(raw)

        def num(name: bytes, kind: type = int) -> Any:
            try:
                value = kind(fields.get(name, b"0").decode())
            except (ValueError, OverflowError):
                raise ProtocolError(f"{where}: field {name.decode()!r} is not a number") from None
            if kind is float and not math.isfinite(value):
                raise ProtocolError(f"{where}: field {name.decode()!r} is not a finite number")
            if not 0 <= value <= _MOST[kind]:
                raise ProtocolError(f"{where}: field {name.decode()!r} is out of range")
            return value

        try:
            state = JobState(text(fields, b"state", where))
            mode = CallMode(text(fields, b"mode", where))
        except ValueError as exc:
            raise ProtocolError(f"{where}: {exc}") from None
        return cls(
            id=job_id,
            queue=text(fields, b"queue", where),
            fn_ref=text(fields, b"fn", where),
            codec=text(fields, b"codec", where),
            mode=mode,
            state=state,
            sealed=fields.get(b"sealed") == b"1",
            total=num(b"total"),
            batches=num(b"batches"),
            ok=num(b"ok"),
            failed=num(b"failed"),
            batches_done=num(b"batches_done"),
            batch_size=num(b"batch_size"),
            chunksize=num(b"chunksize"),
            result_ttl=num(b"result_ttl"),
            created_at=num(b"created_at", float),
            finished_at=num(b"finished_at", float) if fields.get(b"finished_at") else None,
            options=TaskOptions.decode(fields[b"options"], where)
            if fields.get(b"options")
            else DEFAULT_OPTIONS,
            retry_round=num(b"retry_round"),
            retry_batches=num(b"retry_batches"),
            ramp_max=num(b"ramp_max"),
            rounds=sum(
                1
                for name in fields
                if name.startswith(b"round:")
                and name[6:].isdigit()
                and int(name[6:]) <= num(b"retry_round")
            ),
            overlays=_overlays(fields, num(b"retry_round"), where),
            lease_until=num(b"lease_until", float) if fields.get(b"lease_until") else None,
            wrap=_wrap(fields, where),
            bound=fields.get(b"bound", b""),
            label=text(fields, b"label", where)[:MAX_LABEL] if b"label" in fields else "",
            initializer=text(fields, b"init", where) if b"init" in fields else "",
            initargs=fields.get(b"initargs", b""),
        )


#: longest label kept from a meta hash (what status shows for a wrapped callable)
MAX_LABEL = 200


def _wrap(fields: Mapping[bytes, bytes], where: str) -> str:
    wrap = fields.get(b"wrap", b"").decode("utf-8", "replace")
    if wrap and wrap not in WRAPS:
        raise ProtocolError(f"{where}: field 'wrap': unknown wrap {wrap[:40]!r}")
    if wrap and b"bound" not in fields:
        raise ProtocolError(f"{where}: field 'wrap' without field 'bound'")
    return wrap


def _overlays(fields: Mapping[bytes, bytes], rounds: int, where: str) -> dict[int, tuple[str, ...]]:
    """Batch index -> its retries' results fields, from the ``round:<n>`` fields.

    Round numbers may skip: a round prepared and never opened (its producer
    crashed, or another round superseded it) leaves a gap. ``retry_round`` is
    the last round opened, which must be there.
    """
    overlays: dict[int, list[str]] = {}
    opened = sorted(
        int(name[6:]) for name in fields if name.startswith(b"round:") and name[6:].isdigit()
    )
    if rounds and rounds not in opened:
        raise ProtocolError(f"{where}: field 'retry_round' says {rounds}, a round it does not have")
    for round_ in (n for n in opened if n <= rounds):
        batches = whole_numbers(fields[f"round:{round_}".encode()], MAX_NUMBER)
        if batches is None:
            raise ProtocolError(f"{where}: field 'round:{round_}' is not a JSON list of batches")
        for index in batches:
            overlays.setdefault(index, []).append(f"{index}.{round_}")
    return {index: tuple(names) for index, names in overlays.items()}
