"""Reading a job's results back from Redis, as soon as their batches are recorded.

In input order (``outcomes``, ``values``: a batch waits for every batch before
it) or in the order batches were recorded (``as_completed``). A batch's outcomes
are its result entry with its retries' entries overlaid (``Job.retry_failed``).

With a keyring, every result entry is verified before anything in it is
decoded: one that is unsigned, signed with an unknown key, or signed for
another job, batch or codec raises SignatureError naming the job and batch.
The reader cannot tell which items such an entry stands for (its start and
count are part of what cannot be trusted), so it stops there rather than guess;
see docs/security.md. The codec is the one the job handle was enqueued with,
never the meta's alone (``Client.result_codec``); under ``no_pickle`` no job's
results are read as pickle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from producer.events import Events, scan
from producer.handle import JobHandle
from taskfan import keys, sign_result
from taskfan.codec import Codec
from taskfan.connection import translate_errors
from taskfan.errors import JobNotFound, ProtocolError, job_ended
from taskfan.outcomes import (
    Outcome,
    ResultEntry,
    chunk_values,
    iter_outcomes,
    merged_outcomes,
)
from taskfan.outcomes import cancelled as cancelled_outcome

#: result entries fetched per HMGET
FETCH = 32

#: what a streaming map's reader calls once its consumer has read a batch:
#: (batches read so far, that batch's results fields)
Release = Callable[[int, list[str]], None]


def fetch(
    job: JobHandle, fields: list[str], codec: str, events: Events | None = None
) -> list[ResultEntry]:
    """Result entries of these results fields (batch indexes, or "<index>.<round>"),
    verified with the client's keyring when it has one. With ``events``, the read
    rides out Redis outages until their deadline, and the entries it already
    read with the events (``Events.fetched``) are taken from there: when all
    are, no round trip."""
    r = job.client.redis
    held = events.fetched if events is not None else {}
    raw: list[bytes | None] = [held.pop(f, None) for f in fields]
    missing = [f for f, data in zip(fields, raw, strict=True) if data is None]
    if missing:
        if events is not None:
            more = iter(events.call("reading results", r.hmget, job.keys.results, missing))
        else:
            with translate_errors(f"reading results of job {job.id}"):
                more = iter(r.hmget(job.keys.results, missing))
        raw = [next(more) if data is None else data for data in raw]
        if None in raw and not _exists(job, events):  # the job's keys went meanwhile
            raise JobNotFound(job.id)
    entries = []
    for field, data in zip(fields, raw, strict=True):
        where = f"job {job.id} batch {field}"
        if data is None:
            raise ProtocolError(f"{where}: result missing (expired or deleted?)")
        data = sign_result.open_result(job.client.keyring, data, job.id, field, codec, where)
        entries.append(ResultEntry.parse(data, where))
    return entries


def _exists(job: JobHandle, events: Events | None) -> bool:
    r = job.client.redis
    if events is not None:
        return bool(events.call("checking", r.exists, job.keys.meta))
    with translate_errors(f"reading job {job.id}"):
        return bool(r.exists(job.keys.meta))


@dataclass(frozen=True)
class Gap:
    """Items ``start`` .. ``start + count - 1`` of a job that ended ``state``
    (cancelled, abandoned) with no outcome recorded: they read as cancelled."""

    start: int
    count: int
    state: str


def in_order(
    job: JobHandle, timeout: float | None, release: Release | None = None
) -> Iterator[tuple[list[ResultEntry], Codec]]:
    """``read_batches`` without gaps: a cancelled job raises JobCancelled."""
    for read in read_batches(job, timeout, release):
        assert not isinstance(read, Gap)
        yield read


def read_batches(
    job: JobHandle,
    timeout: float | None,
    release: Release | None = None,
    gaps: bool = False,
    check: Callable[[], None] | None = None,
) -> Iterator[tuple[list[ResultEntry], Codec] | Gap]:
    """Per batch, in order: its result entry and its retries' (overlays), once
    all of them are recorded; with the codec to decode them. With ``release``
    (a streaming map), each batch is released once the consumer asks for the
    next one, and forgotten here too, so an endless map reads in flat memory.

    A job that ends cancelled or abandoned raises JobCancelled where its first
    unrecorded batch would come; with ``gaps``, its recorded batches come
    instead, and a ``Gap`` for each run of items with no outcome. ``check`` is
    called each time the reader waits (a streaming map's: its enqueuer gave up)."""
    events = Events(job.client.redis, job.keys, timeout)
    events.check = check
    first: list[dict[bytes, bytes]] | None = None
    if job.fn_ref is None:
        meta = events.call("reading the job", job.meta)  # rides out an outage from the start
        cost = _cost_key(meta.fn_ref)
    else:  # a map's own handle: the meta comes with the first events, one round trip
        cost = _cost_key(job.fn_ref)
        with translate_errors(f"waiting for results of job {job.id}"):
            first = events.read([str(index) for index in range(FETCH)], cost, meta=True)
        if not events.raw_meta:
            raise JobNotFound(job.id)
        meta = events.call("reading the job", job.meta_from, events.raw_meta)
    events.watch(meta.queue)
    codec = job.client.result_codec(job.id, meta.codec, job.codec)
    batches = meta.batches if meta.sealed else None
    total = meta.total if meta.sealed else None
    recorded: set[str] = set()
    next_index = 0
    items = 0  #: items in the batches read so far: where the next batch must start
    cancelled: str | None = None
    while batches is None or next_index < batches:
        run: list[int] = []
        while len(run) < FETCH and (batches is None or next_index + len(run) < batches):
            if not all(f in recorded for f in meta.result_fields(next_index + len(run))):
                break
            run.append(next_index + len(run))
        if not run:
            if cancelled and not gaps:
                raise job_ended(job.id, cancelled)
            if cancelled:  # no batch is recorded after the end: what is left is final
                yield from _after_end(job, codec, events, recorded, next_index, items, cancelled)
                return
            ahead = range(next_index, next_index + FETCH if batches is None else batches)
            prefetch = [f for index in ahead[:FETCH] for f in meta.result_fields(index)]
            with translate_errors(f"waiting for results of job {job.id}"):
                read = first if first is not None else events.read(prefetch, cost)
                found, sealed, cancelled = scan(job.id, read, batches)
            first = None
            if cost is not None and cost in events.costs:
                job.client.remember_cost(meta.fn_ref, events.costs.pop(cost))
            if batches is None and sealed is not None:
                total = events.call("reading the job", sealed_total, job, sealed)
            batches = sealed
            recorded.update(found)
            continue
        wanted = [f for index in run for f in meta.result_fields(index)]
        entries = iter(fetch(job, wanted, codec.name, events))
        for index in run:
            batch = [next(entries) for _ in meta.result_fields(index)]
            if batch[0].start != items:
                raise ProtocolError(
                    f"job {job.id} batch {index}: starts at item {batch[0].start}, but the "
                    f"batches before it end at item {items}: a batch is missing or was moved"
                )
            items += batch[0].count
            yield batch, codec
            if release is not None:
                fields = meta.result_fields(index)
                events.call("releasing results", release, index + 1, fields)  # rides out outages
                events.seen.difference_update(f.encode() for f in fields)
        recorded.difference_update(wanted)
        next_index += len(run)
    if items != total:
        raise ProtocolError(
            f"job {job.id}: its {batches} batches hold {items} items, but its meta says "
            f"total {total}: its meta or results were changed"
        )


def _cost_key(fn_ref: str) -> str | None:
    """The key of the function's cost, read with the events for the next map of
    the function (``producer.sizing``); None for a reference it cannot name."""
    try:
        return keys.cost(fn_ref)
    except ValueError:
        return None


def _after_end(
    job: JobHandle,
    codec: Codec,
    events: Events,
    recorded: set[str],
    next_index: int,
    items: int,
    state: str,
) -> Iterator[tuple[list[ResultEntry], Codec] | Gap]:
    """The rest of a job that ended ``state`` at batch ``next_index`` (item
    ``items``): its batches recorded after that one, in order, and the gaps
    between them and up to its total (the items sent, sealed or not)."""
    final = events.call("reading the job", job.meta)
    later = sorted(int(f) for f in recorded if f.isdigit() and int(f) >= next_index)
    for first in range(0, len(later), FETCH):
        run = later[first : first + FETCH]
        per_batch = [[f for f in final.result_fields(i) if f in recorded] for i in run]
        entries = iter(fetch(job, [f for fields in per_batch for f in fields], codec.name, events))
        for index, fields in zip(run, per_batch, strict=True):
            batch = [next(entries) for _ in fields]
            start = batch[0].start
            if start < items:
                raise ProtocolError(
                    f"job {job.id} batch {index}: starts at item {start}, inside the "
                    f"batches before it (they end at item {items}): a batch was moved"
                )
            if start > items:
                yield Gap(items, start - items, state)
            items = start + batch[0].count
            yield batch, codec
    if final.total > items:
        yield Gap(items, final.total - items, state)


def sealed_total(job: JobHandle, batches: int) -> int:
    """The job's total once its events say it was sealed with ``batches`` batches:
    read from its meta (verified with a keyring), which must agree. The events
    stream is not signed: a forged ``sealed`` event must not cut a job short."""
    meta = job.meta()
    if not meta.sealed or meta.batches != batches:
        found = f"{meta.batches} batches" if meta.sealed else "that it is not sealed"
        raise ProtocolError(
            f"job {job.id}: its events say it was sealed with {batches} batches, but its "
            f"meta says {found}: someone wrote to its events stream"
        )
    return meta.total


def outcomes(
    job: JobHandle,
    timeout: float | None,
    release: Release | None = None,
    check: Callable[[], None] | None = None,
) -> Iterator[Outcome]:
    """Every item's outcome in input order; those of a cancelled job that have
    none recorded are cancelled outcomes. ``check``: see ``read_batches``."""
    for read in read_batches(job, timeout, release, gaps=True, check=check):
        if isinstance(read, Gap):
            yield from (cancelled_outcome(i, job.id, read.state) for i in _span(read))
        else:
            yield from merged_outcomes(read[0], read[1], f"job {job.id}")


def _span(gap: Gap) -> range:
    return range(gap.start, gap.start + gap.count)


def values(
    job: JobHandle,
    timeout: float | None,
    release: Release | None = None,
    check: Callable[[], None] | None = None,
) -> Iterator[Any]:
    """Values in input order; raises TaskFailed at the first failed item.
    ``check``: see ``read_batches``."""
    where = f"job {job.id}"
    for read in read_batches(job, timeout, release, gaps=True, check=check):
        if isinstance(read, Gap):  # the first cancelled item
            raise job_ended(job.id, read.state)
        entries, codec = read
        if len(entries) == 1 and entries[0].failed == 0:
            try:
                chunks = [chunk_values(blob, codec, where) for blob in entries[0].blobs]
            except ProtocolError:  # a chunk that cannot be read: its items fail below
                chunks = [None]
            whole = [chunk for chunk in chunks if chunk is not None]
            if len(whole) == len(chunks) and sum(map(len, whole)) == entries[0].count:
                del chunks
                for chunk in whole:  # fast path: no Outcome per item
                    yield from _drain(chunk)
                del whole
                continue
        merged = merged_outcomes(entries, codec, where)
        merged.reverse()
        while merged:
            error = merged[-1].error
            if error is not None:
                raise error.to_task_failed(job.id, merged[-1].index)
            yield merged.pop().value  # held by nothing here once yielded


def _drain(items: list[Any]) -> Iterator[Any]:
    """The items in order, each let go by the list as it is yielded: a value the
    caller dropped is freed at once, as the stdlib's ``Executor.map`` promises."""
    items.reverse()
    while items:
        yield items.pop()


def as_completed(job: JobHandle, timeout: float | None) -> Iterator[Outcome]:
    """Outcomes in the order their batches were recorded; after a retry round, a
    retried item comes again with its new outcome. A job that ends cancelled or
    abandoned ends with a cancelled outcome for each item that has none."""
    events = Events(job.client.redis, job.keys, timeout)
    meta = events.call("reading the job", job.meta)  # rides out an outage from the start
    events.watch(meta.queue)
    codec = job.client.result_codec(job.id, meta.codec, job.codec)
    batches = meta.batches if meta.sealed else None
    overlays = sum(len(fields) for fields in meta.overlays.values())
    seen = 0
    spans: list[tuple[int, int]] = []  #: (start, count) of each batch's own entry read
    while batches is None or seen < batches + overlays:
        with translate_errors(f"waiting for results of job {job.id}"):
            ready, sealed, stopped = scan(job.id, events.read(), batches)
        if batches is None and sealed is not None:
            events.call("reading the job", sealed_total, job, sealed)
        batches = sealed
        for start in range(0, len(ready), FETCH):
            fields = ready[start : start + FETCH]
            for field, entry in zip(fields, fetch(job, fields, codec.name, events), strict=True):
                if "." not in field:
                    spans.append((entry.start, entry.count))
                yield from iter_outcomes(entry, codec, f"job {job.id}")
        seen += len(ready)
        if stopped:
            total = events.call("reading the job", job.meta).total
            for gap in _gaps(spans, total, stopped):
                yield from (cancelled_outcome(i, job.id, gap.state) for i in _span(gap))
            return


def _gaps(spans: list[tuple[int, int]], total: int, state: str) -> Iterator[Gap]:
    """The runs of items in 0 .. total - 1 that no span covers."""
    at = 0
    for start, count in sorted(spans):
        if start > at:
            yield Gap(at, start - at, state)
        at = max(at, start + count)
    if total > at:
        yield Gap(at, total - at, state)
