"""The messages that travel through Redis between producers and worker nodes.

Batch entry (one field-value entry of the queue stream, one batch of items)::

    j  job id                  b  batch index (0, 1, ...)
    s  index of the first item n  number of items
    f  function reference      c  codec name ("pickle" | "json")
    m  call mode (CallMode)    k  chunksize asked by the job (0: the node decides)
    p  payload: the codec's encoding of the list of items
    o  (optional) JSON task options: timeout, hard_timeout, retries, retry_on, backoff
    r  (optional) retry round, from 1 (Job.retry_failed); then the items are some
       of the batch's, and
    x  their offsets from s, as a JSON list

Result entries: see ``taskfan.outcomes``.

Job events stream entries: ``b=<batch index>`` when a batch is recorded,
``sealed=<batches>`` when the producer has sent every batch, ``end=<state>`` when
the job reaches a final state.

Function cost (key ``keys.cost(fn)``): the seconds per item that a node measured
for the function, as a decimal float; nodes refresh it, it expires after
``COST_TTL`` seconds without.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskfan.errors import ProtocolError


class CallMode(str, enum.Enum):
    """How a node calls the function with one item."""

    ONE = "1"  #: fn(item)
    ARGS = "a"  #: fn(*item), like itertools.starmap
    CALL = "c"  #: fn(*item[0], **item[1]); used by submit(fn, *args, **kwargs)
    STAR = "s"  #: a list is fn(*item), a dict is fn(**item), anything else fn(item)


def call(fn: Any, mode: CallMode, item: Any) -> Any:
    if mode is CallMode.ONE:
        return fn(item)
    if mode is CallMode.ARGS:
        return fn(*item)
    if mode is CallMode.CALL:
        args, kwargs = item
        return fn(*args, **kwargs)
    if isinstance(item, dict):
        return fn(**item)
    if isinstance(item, (list, tuple)):
        return fn(*item)
    return fn(item)


@dataclass(frozen=True)
class TaskOptions:
    """How a node runs each item of a job."""

    #: soft limit, seconds: TimeoutError is raised inside the task
    timeout: float | None = None
    #: hard limit, seconds: the node kills the process running the item
    hard_timeout: float | None = None
    #: extra attempts for an item that raised
    retries: int = 0
    #: exception type names that may be retried (any name in the type's MRO); empty: all
    retry_on: tuple[str, ...] = ()
    #: first backoff, seconds; doubles per attempt, with jitter, up to backoff_max
    backoff: float = 0.1
    backoff_max: float = 10.0

    def __post_init__(self) -> None:
        for name in ("timeout", "hard_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be more than 0 seconds, got {value!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be a whole number of at least 0, got {self.retries!r}")
        if self.backoff < 0 or self.backoff_max < 0:
            raise ValueError("backoff and backoff_max must not be negative")

    @property
    def is_default(self) -> bool:
        return self == DEFAULT_OPTIONS

    def encode(self) -> str:
        data = {
            k: v for k, v in dataclasses.asdict(self).items() if getattr(DEFAULT_OPTIONS, k) != v
        }
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | bytes, where: str) -> TaskOptions:
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if "retry_on" in data:
                data["retry_on"] = tuple(data["retry_on"])
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"{where}: bad task options {text!r}: {exc}") from None


DEFAULT_OPTIONS = TaskOptions()


def _text(fields: Mapping[bytes, bytes], name: bytes, where: str) -> str:
    try:
        return fields[name].decode("utf-8")
    except KeyError:
        raise ProtocolError(f"{where}: missing field {name.decode()!r}") from None
    except UnicodeDecodeError:
        raise ProtocolError(f"{where}: field {name.decode()!r} is not UTF-8") from None


def _int(fields: Mapping[bytes, bytes], name: bytes, where: str) -> int:
    text = _text(fields, name, where)
    try:
        value = int(text)
    except ValueError:
        raise ProtocolError(
            f"{where}: field {name.decode()!r} is not an integer: {text!r}"
        ) from None
    if value < 0:
        raise ProtocolError(f"{where}: field {name.decode()!r} is negative: {value}")
    return value


@dataclass(frozen=True)
class BatchEntry:
    job_id: str
    index: int
    start: int
    count: int
    fn_ref: str
    codec: str
    mode: CallMode
    chunksize: int
    payload: bytes
    options: TaskOptions = DEFAULT_OPTIONS
    #: retry round (0: the batch itself) and, for a retry, the items' offsets from start
    round: int = 0
    offsets: tuple[int, ...] | None = None

    @property
    def field(self) -> str:
        """The field of the job's results hash (and events) this entry records into."""
        return str(self.index) if not self.round else f"{self.index}.{self.round}"

    def fields(self) -> dict[str, str | bytes | int]:
        fields: dict[str, str | bytes | int] = {
            "j": self.job_id,
            "b": self.index,
            "s": self.start,
            "n": self.count,
            "f": self.fn_ref,
            "c": self.codec,
            "m": self.mode.value,
            "k": self.chunksize,
            "p": self.payload,
        }
        if not self.options.is_default:
            fields["o"] = self.options.encode()
        if self.round:
            fields["r"] = self.round
            fields["x"] = json.dumps(list(self.offsets or ()), separators=(",", ":"))
        return fields

    @classmethod
    def parse(cls, fields: Mapping[bytes, bytes], where: str) -> BatchEntry:
        """Parse a stream entry's fields; ``where`` names the entry in errors."""
        mode_text = _text(fields, b"m", where)
        try:
            mode = CallMode(mode_text)
        except ValueError:
            raise ProtocolError(f"{where}: unknown call mode {mode_text!r}") from None
        if b"p" not in fields:
            raise ProtocolError(f"{where}: missing field 'p'")
        round_, offsets = 0, None
        if b"r" in fields:
            round_ = _int(fields, b"r", where)
            try:
                offsets = tuple(int(o) for o in json.loads(fields.get(b"x", b"")))
            except (ValueError, TypeError):
                raise ProtocolError(f"{where}: field 'x' is not a JSON list of offsets") from None
        entry = cls(
            job_id=_text(fields, b"j", where),
            index=_int(fields, b"b", where),
            start=_int(fields, b"s", where),
            count=_int(fields, b"n", where),
            fn_ref=_text(fields, b"f", where),
            codec=_text(fields, b"c", where),
            mode=mode,
            chunksize=_int(fields, b"k", where),
            payload=fields[b"p"],
            options=TaskOptions.decode(fields[b"o"], where) if b"o" in fields else DEFAULT_OPTIONS,
            round=round_,
            offsets=offsets,
        )
        if offsets is not None and len(offsets) != entry.count:
            raise ProtocolError(f"{where}: {len(offsets)} offsets for {entry.count} items")
        return entry


class JobState(str, enum.Enum):
    ACTIVE = "active"
    FINISHED = "finished"
    CANCELLED = "cancelled"


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
    #: retry rounds opened so far (Job.retry_failed)
    retry_round: int = 0
    #: batch index -> the results fields of its retries ("<index>.<round>"), in round order
    overlays: Mapping[int, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.ok + self.failed

    @property
    def status(self) -> str:
        """A human word for where the job is: enqueuing, queued, running, finished, cancelled."""
        if self.state is not JobState.ACTIVE:
            return self.state.value
        if not self.sealed:
            return "enqueuing"
        return "running" if self.batches_done else "queued"

    @classmethod
    def parse(cls, job_id: str, raw: Mapping[bytes, bytes]) -> JobMeta:
        where = f"job {job_id} meta"
        fields = dict(raw)

        def num(name: bytes, kind: type = int) -> Any:
            try:
                return kind(fields.get(name, b"0").decode())
            except ValueError:
                raise ProtocolError(f"{where}: field {name.decode()!r} is not a number") from None

        finished = fields.get(b"finished_at")
        try:
            state = JobState(_text(fields, b"state", where))
            mode = CallMode(_text(fields, b"mode", where))
        except ValueError as exc:
            raise ProtocolError(f"{where}: {exc}") from None
        return cls(
            id=job_id,
            queue=_text(fields, b"queue", where),
            fn_ref=_text(fields, b"fn", where),
            codec=_text(fields, b"codec", where),
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
            finished_at=float(finished.decode()) if finished else None,
            options=TaskOptions.decode(fields[b"options"], where)
            if fields.get(b"options")
            else DEFAULT_OPTIONS,
            retry_round=num(b"retry_round"),
            overlays=_overlays(fields, num(b"retry_round"), where),
        )


def _overlays(fields: Mapping[bytes, bytes], rounds: int, where: str) -> dict[int, tuple[str, ...]]:
    overlays: dict[int, list[str]] = {}
    for round_ in range(1, rounds + 1):
        try:
            batches = json.loads(fields.get(f"round:{round_}".encode(), b"[]"))
        except ValueError:
            raise ProtocolError(f"{where}: field 'round:{round_}' is not JSON") from None
        for index in batches:
            overlays.setdefault(int(index), []).append(f"{index}.{round_}")
    return {index: tuple(names) for index, names in overlays.items()}


#: seconds a published function cost lives without a node refreshing it
COST_TTL = 7 * 24 * 3600


def encode_cost(seconds_per_item: float) -> str:
    return repr(float(seconds_per_item))


def parse_cost(raw: bytes | str | None) -> float | None:
    """A published cost, or None when there is none or it is not a sane number
    (anyone who can write to Redis can write this key: it only sizes batches)."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None
