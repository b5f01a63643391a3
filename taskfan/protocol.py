"""Batch entries: the messages producers put on a queue stream for worker nodes.

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
    w  (optional) wrap: how the node builds the callable from f ("partial",
       "method", "value"), with
    v  its bound state: see ``taskfan.callables``
    i  (optional) the job's initializer, a function reference run once per pool
       process before its first item of the job there (``worker.pool.process_setup``), with
    ia its arguments: the codec's encoding of a list
    g  (optional) signature, when the producer has a secret: see ``taskfan.signing``

``parse`` checks every field (a job id usable as a key, a well-formed function
reference, a known codec, numbers in range, at most one item per payload byte)
and raises ProtocolError naming the entry and the field, never anything else:
an entry anyone wrote to Redis can never crash a node.

The other messages: call modes and task options in ``taskfan.options``, result
entries in ``taskfan.outcomes``, a job's meta hash and events stream in
``taskfan.meta``, function costs in ``taskfan.cost``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from taskfan.callables import VALUE, WRAPS
from taskfan.codec import CODECS
from taskfan.errors import ProtocolError
from taskfan.fields import MAX_COUNT, text, whole_number, whole_numbers
from taskfan.keys import JobKeys
from taskfan.options import DEFAULT_OPTIONS, CallMode, TaskOptions
from taskfan.refs import MAX_REF_LENGTH, well_formed


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
    #: how the node builds the callable from ``fn_ref`` ("": it is the callable),
    #: and the bound state it needs (``taskfan.callables``)
    wrap: str = ""
    bound: bytes = b""
    #: the job's initializer ("": none) and the codec's encoding of its arguments
    initializer: str = ""
    initargs: bytes = b""

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
        if self.wrap:
            fields["w"] = self.wrap
            fields["v"] = self.bound
        if self.initializer:
            fields["i"] = self.initializer
            fields["ia"] = self.initargs
        return fields

    @classmethod
    def parse(cls, fields: Mapping[bytes, bytes], where: str) -> BatchEntry:
        """Parse a stream entry's fields; ``where`` names the entry in errors."""
        mode = _mode(fields, where)
        if b"p" not in fields:
            raise ProtocolError(f"{where}: missing field 'p'")
        job_id = _job_id(fields, where)
        fn_ref = _fn_ref(fields, where)
        codec = text(fields, b"c", where)
        if codec not in CODECS:
            raise ProtocolError(f"{where}: field 'c': unknown codec {codec[:40]!r}")
        round_, offsets = 0, None
        if b"r" in fields:
            round_ = whole_number(fields, b"r", where)
            offsets = _offsets(fields, where)
        count = whole_number(fields, b"n", where, MAX_COUNT)
        start = whole_number(fields, b"s", where)
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
        wrap, bound = _wrap(fields, codec, where)
        initializer, initargs = _initializer(fields, where)
        return cls(
            job_id=job_id,
            index=whole_number(fields, b"b", where),
            start=start,
            count=count,
            fn_ref=fn_ref,
            codec=codec,
            mode=mode,
            chunksize=whole_number(fields, b"k", where),
            payload=payload,
            options=TaskOptions.decode(fields[b"o"], where) if b"o" in fields else DEFAULT_OPTIONS,
            round=round_,
            offsets=offsets,
            wrap=wrap,
            bound=bound,
            initializer=initializer,
            initargs=initargs,
        )


def _initializer(fields: Mapping[bytes, bytes], where: str) -> tuple[str, bytes]:
    """The entry's initializer and its encoded arguments, or ("", b"")."""
    if b"i" not in fields:
        if b"ia" in fields:
            raise ProtocolError(f"{where}: field 'ia' without field 'i'")
        return "", b""
    ref = text(fields, b"i", where)
    if len(ref) > MAX_REF_LENGTH or not well_formed(ref):
        raise ProtocolError(f"{where}: field 'i': bad initializer reference {ref[:80]!r}")
    if b"ia" not in fields:
        raise ProtocolError(f"{where}: field 'i' without field 'ia'")
    return ref, fields[b"ia"]


def _wrap(fields: Mapping[bytes, bytes], codec: str, where: str) -> tuple[str, bytes]:
    """The entry's wrap and bound state (``taskfan.callables``), or ("", b"")."""
    if b"w" not in fields:
        if b"v" in fields:
            raise ProtocolError(f"{where}: field 'v' without field 'w'")
        return "", b""
    wrap = text(fields, b"w", where)
    if wrap not in WRAPS:
        raise ProtocolError(f"{where}: field 'w': unknown wrap {wrap[:40]!r}")
    if b"v" not in fields:
        raise ProtocolError(f"{where}: field 'w' without field 'v'")
    if wrap == VALUE and codec != "pickle":
        raise ProtocolError(f"{where}: a function sent by value needs the pickle codec")
    return wrap, fields[b"v"]


def _mode(fields: Mapping[bytes, bytes], where: str) -> CallMode:
    mode = text(fields, b"m", where)
    try:
        return CallMode(mode)
    except ValueError:
        raise ProtocolError(f"{where}: field 'm': unknown call mode {mode[:40]!r}") from None


def _job_id(fields: Mapping[bytes, bytes], where: str) -> str:
    job_id = text(fields, b"j", where)
    try:
        JobKeys(job_id)
    except ValueError as exc:
        raise ProtocolError(f"{where}: field 'j': {exc}") from None
    return job_id


def _fn_ref(fields: Mapping[bytes, bytes], where: str) -> str:
    fn_ref = text(fields, b"f", where)
    if not well_formed(fn_ref):
        raise ProtocolError(
            f"{where}: field 'f' is not a function reference 'module:function' of at most "
            f"{MAX_REF_LENGTH} characters: {fn_ref[:200]!r}"
        )
    return fn_ref


def _offsets(fields: Mapping[bytes, bytes], where: str) -> tuple[int, ...]:
    offsets = whole_numbers(fields.get(b"x", b""), MAX_COUNT)
    if offsets is None:
        raise ProtocolError(f"{where}: field 'x' is not a JSON list of offsets (0 to {MAX_COUNT})")
    return tuple(offsets)
