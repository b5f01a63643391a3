"""Protocol: batch entries, result entries and job meta, as they travel through Redis."""

from __future__ import annotations

import traceback
from typing import Any, cast

import pytest
import redis

from taskfan.codec import JSON, PICKLE, Codec
from taskfan.errors import ProtocolError, TaskFailed
from taskfan.keys import JobKeys, QueueKeys
from taskfan.meta import JobMeta, JobState
from taskfan.options import CallMode, TaskOptions, call
from taskfan.outcomes import ResultEntry, encode_result, iter_outcomes
from taskfan.protocol import BatchEntry
from tests import tasks


def make_batch(**changes: Any) -> BatchEntry:
    fields: dict[str, Any] = dict(
        job_id="job1",
        index=3,
        start=30,
        count=2,
        fn_ref="tests.tasks:add",
        codec="pickle",
        mode=CallMode.ARGS,
        chunksize=0,
        payload=PICKLE.dumps([(1, 2), (3, 4)]),
    )
    fields.update(changes)
    return BatchEntry(**fields)


def through_stream(client: redis.Redis, fields: dict[str, Any]) -> dict[bytes, bytes]:
    """Add an entry to a queue stream and read it back as a node would."""
    stream = QueueKeys("default").stream
    client.xadd(stream, cast(Any, fields))
    entries: Any = client.xrange(stream)
    [(_, got)] = entries
    return cast(dict[bytes, bytes], got)


@pytest.mark.parametrize(
    "batch",
    [
        make_batch(),
        make_batch(codec="json", mode=CallMode.ONE, payload=JSON.dumps(["ü", 1]), chunksize=7),
        make_batch(payload=b"\x00\xff binary \r\n", mode=CallMode.STAR),
        make_batch(options=TaskOptions(timeout=1.5, retries=2, retry_on=("OSError",))),
    ],
)
def test_batch_entries_round_trip_through_a_stream(
    any_redis: redis.Redis, batch: BatchEntry
) -> None:
    assert BatchEntry.parse(through_stream(any_redis, batch.fields()), "entry 1-0") == batch


def test_default_options_add_no_field() -> None:
    assert "o" not in make_batch().fields()
    assert make_batch(options=TaskOptions(retries=1)).fields()["o"] == '{"retries":1}'


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({b"j": None}, "missing field 'j'"),
        ({b"p": None}, "missing field 'p'"),
        ({b"b": b"three"}, "field 'b' is not an integer: 'three'"),
        ({b"s": b"-1"}, "field 's' is negative: -1"),
        ({b"m": b"z"}, "unknown call mode 'z'"),
        ({b"f": b"\xff"}, "field 'f' is not UTF-8"),
        ({b"o": b"[1]"}, "bad task options"),
        ({b"o": b'{"retries": -1}'}, "bad task options"),
        ({b"o": b'{"colour": 1}'}, "bad task options"),
    ],
)
def test_batch_parse_errors_name_the_entry_and_field(
    change: dict[bytes, bytes | None], words: str
) -> None:
    fields = {
        k.encode(): v if isinstance(v, bytes) else str(v).encode()
        for k, v in make_batch().fields().items()
    }
    for name, value in change.items():
        if value is None:
            fields.pop(name)
        else:
            fields[name] = value
    with pytest.raises(ProtocolError, match="^queue default entry 5-0: .*" + words):
        BatchEntry.parse(fields, "queue default entry 5-0")


def test_task_options_validate() -> None:
    with pytest.raises(ValueError, match=r"timeout must be a number of seconds from 0\.001"):
        TaskOptions(timeout=0)
    with pytest.raises(ValueError, match="retries must be a whole number"):
        TaskOptions(retries=-1)
    with pytest.raises(ValueError, match="backoff must be a number of seconds from 0"):
        TaskOptions(backoff=-1)
    assert TaskOptions().is_default and not TaskOptions(hard_timeout=3).is_default


def chunk(codec: Codec, values: list[Any], errors: list[list[Any]], attempts: Any = None) -> bytes:
    return codec.dumps([values, errors] if attempts is None else [values, errors, attempts])


def error_row(offset: int, exc: BaseException, codec: Codec) -> list[Any]:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return [offset, type(exc).__name__, str(exc), text, exc if codec.carries_exceptions else None]


@pytest.mark.parametrize("codec", [PICKLE, JSON], ids=lambda c: c.name)
def test_outcomes_come_back_in_order_with_errors_in_the_middle(codec: Codec) -> None:
    blobs = [
        chunk(codec, [10, None, 12], [error_row(1, ValueError("bad 11"), codec)]),
        chunk(codec, [None, 14], [error_row(0, KeyError("k"), codec)], [[0, 3], [1, 2]]),
    ]
    entry = ResultEntry.parse(encode_result(10, 5, 2, blobs), "job1 batch 2")
    assert (entry.start, entry.count, entry.failed) == (10, 5, 2)
    outcomes = list(iter_outcomes(entry, codec, "job1 batch 2"))
    assert [o.index for o in outcomes] == [10, 11, 12, 13, 14]
    assert [o.ok for o in outcomes] == [True, False, True, False, True]
    assert [o.value for o in outcomes] == [10, None, 12, None, 14]
    assert [o.attempts for o in outcomes] == [1, 1, 1, 3, 2]
    error = outcomes[1].error
    assert error is not None
    assert (error.type, error.message) == ("ValueError", "bad 11")
    assert error.as_dict()["type"] == "ValueError"
    if codec.carries_exceptions:
        assert isinstance(error.exception, ValueError)
    else:
        assert error.exception is None
    failed = error.to_task_failed("job1", 11)
    assert isinstance(failed, TaskFailed)
    assert str(failed).startswith("item 11 of job job1 failed: ValueError: bad 11")


def test_an_empty_result_entry_has_no_outcomes() -> None:
    entry = ResultEntry.parse(encode_result(0, 0, 0, []), "w")
    assert list(iter_outcomes(entry, PICKLE, "w")) == []


def test_result_entries_survive_a_redis_hash(any_redis: redis.Redis) -> None:
    data = encode_result(2**40, 1, 0, [PICKLE.dumps([[b"\x00\xff"], []])])
    any_redis.hset(JobKeys("j").results, "0", data)
    raw = any_redis.hget(JobKeys("j").results, "0")
    assert isinstance(raw, bytes)
    [outcome] = iter_outcomes(ResultEntry.parse(raw, "w"), PICKLE, "w")
    assert (outcome.index, outcome.value) == (2**40, b"\x00\xff")


def test_a_count_that_does_not_match_the_outcomes_is_an_error() -> None:
    entry = ResultEntry.parse(encode_result(0, 3, 0, [chunk(JSON, [1, 2], [])]), "w")
    with pytest.raises(
        ProtocolError, match="job j batch 0: result entry holds 2 outcomes, expected 3"
    ):
        list(iter_outcomes(entry, JSON, "job j batch 0"))


def test_an_undecodable_chunk_fails_only_its_own_items() -> None:
    """The entry's count and its other chunks say how many items the bad one held."""
    good = JSON.dumps([[7], []])
    entry = ResultEntry.parse(encode_result(0, 3, 0, [b"not json", good]), "w")
    outcomes = list(iter_outcomes(entry, JSON, "job j batch 0"))
    assert [(o.index, o.ok, o.value) for o in outcomes] == [
        (0, False, None), (1, False, None), (2, True, 7),
    ]  # fmt: skip
    for outcome in outcomes[:2]:
        assert outcome.error is not None and outcome.error.type == "UnreadableResult"
        assert "job j batch 0: cannot decode a chunk of results" in outcome.error.message


@pytest.mark.parametrize("cut", [1, 4, 10, 23, 24, 27, 30])
def test_truncated_result_entries_are_refused(cut: int) -> None:
    data = encode_result(0, 1, 0, [b"0123456789"])
    assert len(data) == 38
    with pytest.raises(ProtocolError, match=r"^job j batch 4: "):
        ResultEntry.parse(data[:cut], "job j batch 4")


def test_something_else_is_not_a_result_entry() -> None:
    with pytest.raises(ProtocolError, match="not a taskfan result entry"):
        ResultEntry.parse(b"XXXX" + bytes(40), "w")


def test_call_modes() -> None:
    assert call(tasks.identity, CallMode.ONE, (1, 2)) == (1, 2)
    assert call(tasks.add, CallMode.ARGS, (1, 2)) == 3
    assert call(tasks.echo_args, CallMode.CALL, [[1, 2], {"k": 3}]) == [[1, 2], {"k": 3}]
    assert call(tasks.echo_args, CallMode.CALL, [[], {}]) == [[], {}]
    assert call(tasks.echo_args, CallMode.STAR, [1, 2]) == [[1, 2], {}]
    assert call(tasks.echo_args, CallMode.STAR, (1,)) == [[1], {}]
    assert call(tasks.kwargs_echo, CallMode.STAR, {"b": 1, "a": 2}) == {"a": 2, "b": 1}
    assert call(tasks.identity, CallMode.STAR, "text") == "text"
    assert CallMode("c") is CallMode.CALL


def meta_fields(**changes: str) -> dict[bytes, bytes]:
    fields = {
        "id": "job1", "queue": "default", "fn": "tests.tasks:add", "codec": "pickle",
        "mode": "a", "state": "active", "sealed": "1", "total": "10", "batches": "4",
        "ok": "5", "failed": "2", "batches_done": "3", "batch_size": "3", "chunksize": "0",
        "result_ttl": "60", "created_at": "1700000000.5",
    }  # fmt: skip
    fields.update(changes)
    return {k.encode(): v.encode() for k, v in fields.items()}


def test_job_meta_parses_a_meta_hash(any_redis: redis.Redis) -> None:
    any_redis.hset(JobKeys("job1").meta, mapping=meta_fields())  # type: ignore[arg-type]
    meta = JobMeta.parse("job1", any_redis.hgetall(JobKeys("job1").meta))  # type: ignore[arg-type]
    assert meta == JobMeta(
        id="job1", queue="default", fn_ref="tests.tasks:add", codec="pickle",
        mode=CallMode.ARGS, state=JobState.ACTIVE, sealed=True, total=10, batches=4, ok=5,
        failed=2, batches_done=3, batch_size=3, chunksize=0, result_ttl=60,
        created_at=1700000000.5, finished_at=None,
    )  # fmt: skip
    assert (meta.done, meta.status) == (7, "running")


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"sealed": "0"}, "enqueuing"),
        ({"batches_done": "0"}, "queued"),
        ({"state": "finished", "finished_at": "1700000001"}, "finished"),
        ({"state": "cancelled"}, "cancelled"),
    ],
)
def test_job_meta_status(changes: dict[str, str], status: str) -> None:
    meta = JobMeta.parse("job1", meta_fields(**changes))
    assert meta.status == status
    if "finished_at" in changes:
        assert meta.finished_at == 1700000001.0


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"total": "ten"}, "field 'total' is not a number"),
        ({"state": "paused"}, "'paused' is not a valid JobState"),
        ({"mode": "?"}, "'\\?' is not a valid CallMode"),
    ],
)
def test_job_meta_errors_name_the_job(changes: dict[str, str], words: str) -> None:
    with pytest.raises(ProtocolError, match="^job job1 meta: " + words):
        JobMeta.parse("job1", meta_fields(**changes))


def test_job_meta_needs_its_identity_fields() -> None:
    fields = meta_fields()
    del fields[b"fn"]
    with pytest.raises(ProtocolError, match="job job1 meta: missing field 'fn'"):
        JobMeta.parse("job1", fields)
