"""Size limits: refused at enqueue with the item named, batches split, results capped."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client, Executor
from taskfan.codec import JSON, PICKLE
from taskfan.errors import ConfigError, LimitExceeded
from taskfan.keys import QueueKeys
from taskfan.limits import Limits, format_size, parse_size
from taskfan.options import CallMode
from taskfan.outcomes import ResultEntry, encode_result, iter_outcomes
from taskfan.protocol import BatchEntry
from taskfan.settings import Settings
from tests import tasks
from tests.cli_support import clean_env, invoke, outcomes, write_lines
from tests.conftest import StartWorker
from worker.core.batches import Completed, Delivery
from worker.core.chunk_sizing import ChunkSizer
from worker.core.entry_checks import Guard
from worker.core.scheduler import Scheduler
from worker.pool.child import run_chunk

__all__ = ["clean_env"]


def test_sizes_parse_and_print_in_binary_units() -> None:
    assert parse_size("1048576") == parse_size("1M") == parse_size("1 MiB") == 2**20
    assert parse_size("64k") == 64 * 1024 and parse_size("2G") == 2**31
    for bad in ("", "1.5M", "-1", "12Q", "M"):
        with pytest.raises(ValueError, match="expected a size in bytes"):
            parse_size(bad)
    assert (format_size(2**24), format_size(1536), format_size(10)) == (
        "16 MiB",
        "1.5 KiB",
        "10 bytes",
    )


def test_settings_keep_limits_workable() -> None:
    assert Settings.from_env({"TASKFAN_MAX_ITEM_BYTES": "1M"}).max_item_bytes == 2**20
    with pytest.raises(ConfigError, match=r"max_item_bytes .* must be at most max_batch_bytes"):
        Settings(max_item_bytes=2**30, max_batch_bytes=2**20)
    with pytest.raises(ConfigError, match="at most 512 MiB: Redis refuses larger values"):
        Settings(max_batch_bytes=2**30)
    with pytest.raises(ConfigError, match="TASKFAN_MAX_BATCH_BYTES='lots'"):
        Settings.from_env({"TASKFAN_MAX_BATCH_BYTES": "lots"})
    with pytest.raises(ConfigError, match="at least 1"):
        Limits.of(0, None)


def test_an_item_over_the_limit_stops_the_enqueue_and_leaves_nothing(
    redis_url: str, r: redis.Redis
) -> None:
    client = Client.from_url(redis_url, max_item_bytes=1000, max_batch_bytes=4000)
    items = ["a"] * 7 + ["b" * 2000] + ["c"] * 3
    with pytest.raises(LimitExceeded, match=r"item 7 encodes to 2\.0 KiB with the pickle codec"):
        client.map(tasks.identity, items, batch_size=4)
    assert r.keys("*{j:*") == []
    assert r.xlen(QueueKeys("default").stream) == 0
    with Executor(client) as executor, pytest.raises(LimitExceeded, match="arguments encode"):
        executor.submit(tasks.identity, "d" * 2000)


def test_a_batch_over_the_limit_is_split(
    redis_url: str, r: redis.Redis, start_worker: StartWorker
) -> None:
    client = Client.from_url(redis_url, max_item_bytes=1000, max_batch_bytes=4000)
    items = [f"{i:03d}" * 160 for i in range(20)]  # about 480 bytes each
    job = client.map(tasks.identity, items, batch_size=20)
    entries: Any = r.xrange(QueueKeys("default").stream)
    payloads = [fields[b"p"] for _, fields in entries]
    assert len(payloads) > 2 and all(len(p) <= 4000 for p in payloads)
    assert sum(len(pickle.loads(p)) for p in payloads) == 20
    start_worker()
    assert list(job.results(timeout=60)) == items


@pytest.mark.usefixtures("clean_env")
def test_the_cli_names_the_line_of_an_item_over_the_limit(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, tmp_path: Path
) -> None:
    # 1601 bytes of line (under the cap on lines), 3.5 KiB once encoded (1e5 -> 100000.0)
    big = "[" + ",".join(["1e5"] * 400) + "]"
    path = write_lines(tmp_path / "in.jsonl", ['"ok"', "", big, '"fine"'])
    args = ["enqueue", "tests.tasks:identity", "-i", str(path), "--redis-url", redis_url]
    refused = invoke(*args, "--max-item-bytes", "2k")
    assert refused.exit_code == 2
    assert f"{path}:3: the item encodes to 3.5 KiB, over max_item_bytes (2 KiB" in refused.stderr
    assert r.keys("*{j:*") == []
    start_worker()
    skipped = invoke(*args, "--max-item-bytes", "2k", "--skip-invalid", "--wait")
    assert skipped.exit_code == 1
    lines = outcomes(skipped.stdout)
    assert [line["ok"] for line in lines] == [True, False, True]
    assert lines[1]["error"]["type"] == "InvalidInput"
    assert f"{path}:3: the item encodes to" in lines[1]["error"]["message"]
    assert invoke("worker", "--max-item-bytes", "12Q").exit_code == 2


def test_a_node_records_a_result_over_its_limit_as_that_item_s_error(
    redis_url: str, start_worker: StartWorker
) -> None:
    start_worker("--max-item-bytes", "4k")
    job = Client.from_url(redis_url).map(tasks.text_of, [10, 5000, 20], batch_size=3)
    got = list(job.outcomes(timeout=60))
    assert [o.ok for o in got] == [True, False, True]
    assert got[1].error is not None and got[1].error.type == "ResultTooLarge"
    assert "encodes to 4.9 KiB with the pickle codec, over the node's max_item_bytes (4 KiB)" in (
        got[1].error.message
    )
    assert [got[0].value, got[2].value] == ["x" * 10, "x" * 20]


def test_a_huge_error_is_cut_to_fit() -> None:
    result = run_chunk("tests.tasks:fail_loudly", "json", "1", [100_000, 5],
                       max_result_bytes=20_000)  # fmt: skip
    entry = ResultEntry.parse(encode_result(0, 2, 2, [result.parts[0].blob]), "t")
    errors = [o.error for o in iter_outcomes(entry, JSON, "t")]
    assert result.failed == 2 and len(result.parts[0].blob) < 20_000
    assert errors[0] is not None and "characters cut" in errors[0].message
    assert errors[1] is not None and errors[1].message == "xxxxx"


def delivery(entry: BatchEntry) -> Delivery:
    fields = {k.encode(): v if isinstance(v, bytes) else str(v).encode()
              for k, v in entry.fields().items()}  # fmt: skip
    return Delivery(QueueKeys("default"), b"1-0", fields)


def test_a_batch_s_results_over_the_limit_fail_its_largest_chunks() -> None:
    guard = Guard(limits=Limits(max_item_bytes=2000, max_batch_bytes=5000))
    s = Scheduler(2, ChunkSizer(2), guard=guard)
    sizes = [10, 10, 1500, 1500, 1500, 1500, 10, 10]
    entry = BatchEntry("job1", 0, 0, 8, "tests.tasks:text_of", "pickle", CallMode.ONE, 2,
                       PICKLE.dumps(sizes))  # fmt: skip
    assert s.accept(delivery(entry)) is None
    completed: Completed | None = None
    while (chunk := s.next_chunk()) is not None:
        s.sent(chunk, 0.0)
        result = run_chunk(entry.fn_ref, "pickle", "1", chunk.items(), max_result_bytes=2000,
                           first=chunk.lo)  # fmt: skip
        completed = s.done(chunk, result) or completed
    assert completed is not None and len(completed.entry) <= 5000
    got = list(iter_outcomes(ResultEntry.parse(completed.entry, "t"), PICKLE, "t"))
    assert [o.ok for o in got] == [True, True, False, False, True, True, True, True]
    assert got[2].error is not None and got[2].error.type == "ResultTooLarge"
    assert "over the node's max_batch_bytes (4.9 KiB)" in got[2].error.message
    assert (completed.ok, completed.failed) == (6, 2)


def test_a_node_refuses_a_payload_over_its_batch_limit() -> None:
    s = Scheduler(1, ChunkSizer(1), guard=Guard(limits=Limits(100, 1000)))
    entry = BatchEntry("job1", 4, 40, 2, "tests.tasks:identity", "json", CallMode.ONE, 0,
                       JSON.dumps(["a" * 600, "b" * 600]))  # fmt: skip
    completed = s.accept(delivery(entry))
    assert completed is not None and completed.failed == 2 and completed.dead_reason
    assert "job job1 batch 4: its payload is 1.2 KiB, over this node's max_batch_bytes" in (
        completed.dead_reason
    )


def test_a_node_counts_initargs_and_bound_state_in_its_batch_limit() -> None:
    """Every pool process decodes an entry's initargs (``ia``) and bound state
    (``v``): a forged entry cannot carry them past max_batch_bytes."""
    s = Scheduler(1, ChunkSizer(1), guard=Guard(limits=Limits(100, 1000)))
    entry = BatchEntry("job1", 4, 40, 1, "tests.tasks:identity", "json", CallMode.ONE, 0,
                       JSON.dumps(["a"]), initializer="tests.init_calls:init",
                       initargs=JSON.dumps(["x" * 1200]))  # fmt: skip
    completed = s.accept(delivery(entry))
    assert completed is not None and completed.failed == 1 and completed.dead_reason
    assert "job job1 batch 4: its payload, bound state and initargs are 1.2 KiB, over " in (
        completed.dead_reason
    )


@pytest.mark.parametrize("field", ["initargs", "bound"])
def test_a_node_refuses_initargs_or_bound_state_too_large_decoded(field: str) -> None:
    """``[[],[],...]`` within max_batch_bytes takes 20 times its size decoded, in
    every pool process: refused by the same estimate as a payload."""
    s = Scheduler(1, ChunkSizer(1), guard=Guard(max_decoded_bytes=1_000_000))
    bomb = b"[" + b"[]," * 100_000 + b"[]]"
    state = {"initializer": "tests.init_calls:init", "initargs": bomb} if field == "initargs" else {
        "wrap": "partial", "bound": b"[" + bomb + b", {}]"}  # fmt: skip
    entry = BatchEntry("job1", 0, 0, 1, "tests.tasks:identity", "json", CallMode.ONE, 0,
                       JSON.dumps(["a"]), **state)  # type: ignore[arg-type]  # fmt: skip
    completed = s.accept(delivery(entry))
    assert completed is not None and completed.failed == 1 and completed.dead_reason
    name = "initargs" if field == "initargs" else "bound state"
    assert f"job job1 batch 0: its {name} of 293.0 KiB (" in completed.dead_reason
    assert "over this node's max_decoded_bytes" in completed.dead_reason
