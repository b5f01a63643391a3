"""Fuzzing the parsers of what comes out of Redis: anything at all gives a
ProtocolError (or SignatureError) that names what was wrong, never another error.

Batch entries, result entries, job meta, events, signatures, and a node's
whole intake (``Scheduler.accept``). Example counts stay moderate, so each test
takes a second or two.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.events import scan
from taskfan.codec import JSON
from taskfan.errors import ProtocolError, SignatureError
from taskfan.fields import MAX_COUNT
from taskfan.keys import JobKeys, QueueKeys
from taskfan.meta import JobMeta
from taskfan.options import CallMode, TaskOptions
from taskfan.outcomes import ResultEntry, encode_result, iter_outcomes, merged_outcomes
from taskfan.protocol import BatchEntry
from taskfan.signing import Keyring
from worker.core.batches import Delivery
from worker.core.chunk_sizing import ChunkSizer
from worker.core.entry_checks import Guard
from worker.core.scheduler import Scheduler

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYRING = Keyring(["fuzz-secret-0123456789abcdef"])

#: values that sit on the edges of what the parsers check
EDGES = [
    b"", b"0", b"1", b"-1", b"+1", b" 1", b"1_000", b"1e3", b"0x10", b"\xd9\xa3",
    str(MAX_COUNT).encode(), str(MAX_COUNT + 1).encode(), b"9" * 19, b"9" * 20, b"9" * 5000,
    b"\xff\xfe", b"null", b"[]", b"{}", b"[1,2]", b"[-1]", b"[4294967296]", b"[1.5]", b"[true]",
    b'{"timeout": 0}', b'{"timeout": 1e999}', b'{"backoff": NaN}', b'{"retry_on": 5}',
    b'{"retry_on": [1]}', b'{"retries": true}', b'{"colour": 1}', b"[" * 5000, b"{" * 5000,
    b"tests.tasks:square", b"os:system", b":x", b"a:", b".x:y", b"a..b:c", b"x:y.__class__",
    b"json", b"pickle", b"yaml", b"1", b"a", b"c", b"s", b"job1", b"{j:1}", b"a b", b"x" * 10_000,
]  # fmt: skip
FIELDS = [b"j", b"b", b"s", b"n", b"f", b"c", b"m", b"k", b"p", b"o", b"r", b"x", b"g"]
values = st.one_of(
    st.sampled_from(EDGES),
    st.binary(max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70).map(lambda i: str(i).encode()),
    st.text(max_size=20).map(lambda t: t.encode("utf-8")),
)


def valid_fields(**changes: bytes | None) -> dict[bytes, bytes]:
    entry = BatchEntry(
        "job1", 3, 30, 2, "tests.tasks:square", "json", CallMode.ONE, 0, JSON.dumps([1, 2]),
        options=TaskOptions(timeout=1.0), round=1, offsets=(0, 1),
    )  # fmt: skip
    fields = {
        k.encode(): v if isinstance(v, bytes) else str(v).encode()
        for k, v in entry.fields().items()
    }
    for name, value in changes.items():
        if value is None:
            fields.pop(name.encode(), None)
        else:
            fields[name.encode()] = value
    return fields


entries = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS) | st.binary(max_size=3), values, max_size=14),
    st.builds(
        lambda changes: valid_fields(**changes),
        st.dictionaries(st.sampled_from([n.decode() for n in FIELDS]), st.none() | values),
    ),
)


@FUZZ
@given(entries)
def test_batch_entries_parse_or_name_what_is_wrong(fields: dict[bytes, bytes]) -> None:
    try:
        entry = BatchEntry.parse(fields, "queue q entry 1-0")
    except ProtocolError as exc:
        assert str(exc).startswith("queue q entry 1-0: ")
        return
    # What parses can be keyed, counted and recorded without a surprise.
    JobKeys(entry.job_id)
    assert entry.count <= len(entry.payload)
    encode_result(entry.start, entry.count, 0, [], entry.offsets)


@FUZZ
@given(entries, st.booleans())
def test_a_node_s_intake_never_raises(fields: dict[bytes, bytes], signed: bool) -> None:
    """Scheduler.accept on anything: run it, or dead-letter it with a reason naming
    the entry. Random payloads are never unpickled (--no-pickle)."""
    guard = Guard(keyring=KEYRING if signed else None, no_pickle=True)
    scheduler = Scheduler(2, ChunkSizer(2), guard=guard)
    delivery = Delivery(QueueKeys("q"), b"1-0", fields)
    completed = scheduler.accept(delivery)
    if completed is None:
        assert not signed and scheduler.pending  # a valid entry: its chunks wait to run
        return
    if completed.dead_reason is not None:
        assert "queue q entry 1-0" in completed.dead_reason or "job " in completed.dead_reason
        assert not signed or "bad signature" in completed.dead_reason
        if completed.job_id:
            # Its items are recorded as failed: the entry decodes into exactly its count.
            entry = ResultEntry.parse(completed.entry, "t")
            assert len(list(iter_outcomes(entry, JSON, "t"))) == entry.count


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)
blobs = st.one_of(
    st.binary(max_size=60),
    json_values.map(JSON.dumps),
    st.tuples(st.lists(json_values, max_size=4), st.lists(json_values, max_size=3), json_values)
    .map(list)
    .map(JSON.dumps),
)


@st.composite
def result_entries(draw: st.DrawFn) -> bytes:
    """Random bytes, or an entry well framed around random chunks, maybe cut short."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=80))
    count = draw(st.integers(0, 6))
    offsets = draw(st.none() | st.lists(st.integers(0, MAX_COUNT), min_size=count, max_size=count))
    start, failed = draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, MAX_COUNT))
    data = encode_result(start, count, failed, draw(st.lists(blobs, max_size=3)), offsets)
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data


@FUZZ
@given(result_entries(), st.lists(result_entries(), max_size=2))
def test_result_entries_decode_or_name_what_is_wrong(data: bytes, retries: list[bytes]) -> None:
    try:
        entry = ResultEntry.parse(data, "job j batch 0")
        outcomes = list(iter_outcomes(entry, JSON, "job j batch 0"))
        assert len(outcomes) == entry.count
        others = [ResultEntry.parse(r, "job j batch 0") for r in retries]
        merged_outcomes([entry, *others], JSON, "job j batch 0")
    except ProtocolError as exc:
        assert str(exc).startswith("job j batch 0: ")


@FUZZ
@given(st.binary(max_size=120))
def test_signed_results_verify_or_say_why(data: bytes) -> None:
    for candidate in (data, b"TFS1" + data, KEYRING.seal_result("j", "0", "json", data)[:-1]):
        try:
            KEYRING.open_result(candidate, "j", "0", "json", "job j batch 0")
        except SignatureError as exc:
            assert str(exc).startswith("job j batch 0: ")
        else:
            raise AssertionError("a result nobody signed was accepted")


META_FIELDS = [
    b"id", b"queue", b"fn", b"codec", b"mode", b"state", b"sealed", b"total", b"batches",
    b"ok", b"failed", b"batches_done", b"batch_size", b"chunksize", b"result_ttl",
    b"created_at", b"finished_at", b"options", b"retry_round", b"round:1", b"round:2", b"sig",
]  # fmt: skip
GOOD_META = {
    b"queue": b"default", b"fn": b"m:f", b"codec": b"json", b"mode": b"1",
    b"state": b"finished", b"total": b"4", b"created_at": b"1.5",
}  # fmt: skip
meta_values = st.one_of(
    values, st.sampled_from([b"active", b"finished", b"nan", b"inf", b"1e999", b"[0,1]"])
)


@FUZZ
@given(st.dictionaries(st.sampled_from(META_FIELDS), meta_values), st.booleans())
def test_job_meta_parses_or_names_what_is_wrong(
    changes: dict[bytes, bytes], from_good: bool
) -> None:
    raw = {**GOOD_META, **changes} if from_good else changes
    try:
        meta = JobMeta.parse("j1", raw)
    except ProtocolError as exc:
        assert str(exc).startswith("job j1 meta: ")
        return
    assert meta.done == meta.ok + meta.failed


@FUZZ
@given(st.lists(st.dictionaries(st.sampled_from([b"b", b"sealed", b"end", b"x"]), values)))
def test_events_read_or_name_what_is_wrong(events: list[dict[bytes, bytes]]) -> None:
    try:
        scan("j1", events, None)
    except ProtocolError as exc:
        assert str(exc).startswith("job j1: its events stream holds an entry")


def test_deep_nesting_is_a_protocol_error_not_a_recursion_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    for name in ("o", "x"):
        with pytest.raises(ProtocolError, match=f"field '{name}'|bad task options"):
            BatchEntry.parse(valid_fields(**{name: deep}), "e")
    entry = ResultEntry.parse(encode_result(0, 1, 0, [deep]), "e")
    (outcome,) = iter_outcomes(entry, JSON, "e")  # its chunk's items fail; nothing raises
    assert outcome.error is not None and outcome.error.type == "UnreadableResult"
    assert "cannot decode a chunk of results" in outcome.error.message
    with pytest.raises(ProtocolError, match="round:1"):
        JobMeta.parse("j", {**GOOD_META, b"retry_round": b"1", b"round:1": deep})
