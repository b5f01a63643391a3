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
    g  (optional) signature, when the producer has a secret: see ``taskfan.signing``

``parse`` checks every field (a job id usable as a key, a well-formed function
reference, a known codec, numbers in range, at most one item per payload byte)
and raises ProtocolError naming the entry and the field, never anything else:
an entry anyone wrote to Redis can never crash a node.

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
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskfan.codec import CODECS
from taskfan.errors import ProtocolError
from taskfan.keys import JobKeys
from taskfan.refs import well_formed

#: largest count (a u32 in result entries) and largest other number in an entry
MAX_COUNT = 2**32 - 1
MAX_NUMBER = 2**63 - 1
_DIGITS = re.compile(rb"[0-9]{1,19}")


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
            if value is not None and not (_number(value) and 0 < value < math.inf):
                raise ValueError(f"{name} must be more than 0 seconds, got {value!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be a whole number of at least 0, got {self.retries!r}")
        for name in ("backoff", "backoff_max"):
            value = getattr(self, name)
            if not (_number(value) and 0 <= value < math.inf):
                raise ValueError(f"{name} must not be negative: a number of seconds, got {value!r}")
        if not isinstance(self.retry_on, tuple) or not all(
            isinstance(name, str) for name in self.retry_on
        ):
            raise ValueError(f"retry_on must be exception type names, got {self.retry_on!r}")

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
            if isinstance(data.get("retry_on"), list):
                data["retry_on"] = tuple(data["retry_on"])
            return cls(**data)
        except (ValueError, TypeError, RecursionError) as exc:
            shown = text[:200] if isinstance(text, (str, bytes)) else text
            raise ProtocolError(f"{where}: bad task options {shown!r}: {exc}") from None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


DEFAULT_OPTIONS = TaskOptions()


def _text(fields: Mapping[bytes, bytes], name: bytes, where: str) -> str:
    try:
        return fields[name].decode("utf-8")
    except KeyError:
        raise ProtocolError(f"{where}: missing field {name.decode()!r}") from None
    except UnicodeDecodeError:
        raise ProtocolError(f"{where}: field {name.decode()!r} is not UTF-8") from None


def _int(fields: Mapping[bytes, bytes], name: bytes, where: str, most: int = MAX_NUMBER) -> int:
    """A field holding a whole number from 0 to ``most``, in plain ASCII digits."""
    if name not in fields:
        raise ProtocolError(f"{where}: missing field {name.decode()!r}")
    raw = fields[name]
    if not _DIGITS.fullmatch(raw):
        shown = raw[:40].decode("utf-8", "replace")
        if raw[:1] == b"-" and _DIGITS.fullmatch(raw[1:]):
            raise ProtocolError(f"{where}: field {name.decode()!r} is negative: {shown}")
        raise ProtocolError(f"{where}: field {name.decode()!r} is not an integer: {shown!r}")
    value = int(raw)
    if value > most:
        raise ProtocolError(f"{where}: field {name.decode()!r} is too large: {value} > {most}")
    return value


def _offsets(fields: Mapping[bytes, bytes], where: str) -> tuple[int, ...]:
    try:
        offsets = json.loads(fields.get(b"x", b""))
    except (ValueError, RecursionError):
        offsets = None
    if not isinstance(offsets, list) or not all(
        type(o) is int and 0 <= o <= MAX_COUNT for o in offsets
    ):
        raise ProtocolError(f"{where}: field 'x' is not a JSON list of offsets (0 to {MAX_COUNT})")
    return tuple(offsets)


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
            raise ProtocolError(
                f"{where}: field 'm': unknown call mode {mode_text[:40]!r}"
            ) from None
        if b"p" not in fields:
            raise ProtocolError(f"{where}: missing field 'p'")
        job_id = _text(fields, b"j", where)
        try:
            JobKeys(job_id)
        except ValueError as exc:
            raise ProtocolError(f"{where}: field 'j': {exc}") from None
        fn_ref = _text(fields, b"f", where)
        if not well_formed(fn_ref):
            raise ProtocolError(
                f"{where}: field 'f' is not a function reference 'module:function': "
                f"{fn_ref[:200]!r}"
            )
        codec = _text(fields, b"c", where)
        if codec not in CODECS:
            raise ProtocolError(f"{where}: field 'c': unknown codec {codec[:40]!r}")
        round_, offsets = 0, None
        if b"r" in fields:
            round_ = _int(fields, b"r", where)
            offsets = _offsets(fields, where)
        count = _int(fields, b"n", where, MAX_COUNT)
        start = _int(fields, b"s", where)
        payload = fields[b"p"]
        if count > len(payload):
            raise ProtocolError(
                f"{where}: field 'n' says {count} items, but the payload has only "
                f"{len(payload)} bytes"
            )
        if offsets is not None and len(offsets) != count:
            raise ProtocolError(
                f"{where}: field 'x' holds {len(offsets)} offsets for {count} items"
            )
        return cls(
            job_id=job_id,
            index=_int(fields, b"b", where),
            start=start,
            count=count,
            fn_ref=fn_ref,
            codec=codec,
            mode=mode,
            chunksize=_int(fields, b"k", where),
            payload=payload,
            options=TaskOptions.decode(fields[b"o"], where) if b"o" in fields else DEFAULT_OPTIONS,
            round=round_,
            offsets=offsets,
        )


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
            return value

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
            finished_at=num(b"finished_at", float) if fields.get(b"finished_at") else None,
            options=TaskOptions.decode(fields[b"options"], where)
            if fields.get(b"options")
            else DEFAULT_OPTIONS,
            retry_round=num(b"retry_round"),
            overlays=_overlays(fields, num(b"retry_round"), where),
        )


def _overlays(fields: Mapping[bytes, bytes], rounds: int, where: str) -> dict[int, tuple[str, ...]]:
    overlays: dict[int, list[str]] = {}
    if rounds > sum(name.startswith(b"round:") for name in fields):
        raise ProtocolError(f"{where}: field 'retry_round' says {rounds}, more rounds than it has")
    for round_ in range(1, rounds + 1):
        try:
            batches = json.loads(fields.get(f"round:{round_}".encode(), b"[]"))
        except (ValueError, RecursionError):
            batches = None
        if not isinstance(batches, list) or not all(
            type(i) is int and 0 <= i <= MAX_NUMBER for i in batches
        ):
            raise ProtocolError(f"{where}: field 'round:{round_}' is not a JSON list of batches")
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
