"""Read the failures of a job without running code from Redis.

``taskfan inspect``, ``taskfan dead`` and the dashboard show errors (type,
message, traceback text) of jobs of any codec. Loading a pickle runs whatever
its author put in it, and an operator's tool should not run code for whoever
can write to Redis. So pickled result chunks are read here with an unpickler
that imports nothing: every class or function a pickle names becomes an inert
placeholder (``Opaque``), which keeps the strings and lists around it intact.
Values are thus not the real objects (a tool that wants them uses ``Job``),
but errors, which are plain strings, come through whole. Signed entries are read
past their signature unchecked (``sign_result.unverified``): what is shown is what
Redis holds; ``Job`` verifies.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterator, Sequence
from typing import Any

from producer.ops.skipped import Skipped
from taskfan.connection import RedisClient
from taskfan.errors import ProtocolError
from taskfan.keys import JobKeys
from taskfan.meta import JobMeta
from taskfan.outcomes import (
    Outcome,
    ResultEntry,
    failed_count,
    iter_outcomes,
    merged_outcomes,
)
from taskfan.sign_result import unverified

#: result entries fetched per HMGET while looking for failures
FETCH = 32
#: jobs of up to this many batches are searched batch by batch (128 HMGETs at
#: most); larger ones only where their results hash has entries
SEARCHED = 4096


class Opaque:
    """Stands for an object of a class a pickle names; nothing of it runs."""

    _name = "object"

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:
        obj = super().__new__(cls)
        obj.__dict__["args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __call__(self, *args: Any, **kwargs: Any) -> Opaque:
        """A pickle may call what another call returned: that is inert too."""
        return Opaque(*args)

    def __repr__(self) -> str:
        return f"<{self._name}>"


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return type(name, (Opaque,), {"_name": f"{module}.{name}"})

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not supported")


class SafeCodec:
    """A read-only codec: JSON as it is, pickle through the inert unpickler."""

    carries_exceptions = False

    def __init__(self, name: str) -> None:
        if name not in ("json", "pickle"):
            raise ProtocolError(f"unknown codec {name!r}")
        self.name = name

    def dumps(self, value: Any) -> bytes:
        raise NotImplementedError("SafeCodec only reads")

    def dumps_portable(self, value: Any) -> tuple[bytes, bool]:
        raise NotImplementedError("SafeCodec only reads")

    def loads(self, data: bytes) -> Any:
        if self.name == "json":
            return json.loads(data)
        return _SafeUnpickler(io.BytesIO(data)).load()


def batch_outcomes(
    r: RedisClient, meta: JobMeta, index: int, fields: Sequence[bytes | None] | None = None
) -> list[Outcome] | None:
    """Batch ``index``'s outcomes (its entry with its retries overlaid); None when
    the batch is not recorded yet. ``fields``: the entries, when already fetched."""
    names = meta.result_fields(index)
    if fields is None:
        fetched: Any = r.hmget(JobKeys(meta.id).results, names)
        fields = fetched
    assert fields is not None
    if fields[0] is None:
        return None
    where = f"job {meta.id} batch {index}"
    entries = [ResultEntry.parse(unverified(data), where) for data in fields if data is not None]
    return merged_outcomes(entries, SafeCodec(meta.codec), where)


def _recorded(r: RedisClient, meta: JobMeta) -> Sequence[int]:
    """The batches that may hold outcomes, in order: all of a job of up to
    SEARCHED batches; of a larger one, those its results hash has an entry for
    (HKEYS: bounded by what Redis holds, whatever its meta claims)."""
    if meta.batches <= SEARCHED:
        return range(meta.batches)
    names: Any = r.hkeys(JobKeys(meta.id).results)
    plain = (n if isinstance(n, bytes) else str(n).encode() for n in names)
    found = {int(n) for n in plain if n.isdigit() and len(n) <= 19}
    return sorted(i for i in found if i < meta.batches)


def failures(
    r: RedisClient, meta: JobMeta, limit: int, skipped: list[Skipped] | None = None
) -> Iterator[Outcome]:
    """The first ``limit`` failed items of a job, in input order, as they stand
    (after retries). Only entries that hold a failure are decoded; a batch whose
    entries do not parse is passed over and named in ``skipped``."""
    if limit <= 0 or meta.failed <= 0:
        return
    skipped = [] if skipped is None else skipped
    found = 0
    key = JobKeys(meta.id).results
    batches = _recorded(r, meta)
    for start in range(0, len(batches), FETCH):
        indexes = batches[start : start + FETCH]
        names = [meta.result_fields(i) for i in indexes]
        flat: list[Any] = r.hmget(key, [n for group in names for n in group])
        pos = 0
        for index, group in zip(indexes, names, strict=True):
            fields = flat[pos : pos + len(group)]
            pos += len(group)
            if fields[0] is None or not any(_failed(data) for data in fields if data):
                continue
            try:
                outcomes = batch_outcomes(r, meta, index, fields) or []
            except ProtocolError as exc:
                skipped.append(Skipped("batch", f"{meta.id}/{index}", str(exc)))
                continue
            for outcome in outcomes:
                if not outcome.ok:
                    yield outcome
                    found += 1
                    if found >= limit:
                        return


def entry_outcomes(meta: JobMeta, data: bytes, where: str) -> list[Outcome]:
    """The outcomes of one result entry, decoded safely."""
    entry = ResultEntry.parse(unverified(data), where)
    return list(iter_outcomes(entry, SafeCodec(meta.codec), where))


def _failed(data: bytes) -> int:
    try:
        return failed_count(unverified(data))
    except ProtocolError:
        return 1  # let the full parse name the problem
