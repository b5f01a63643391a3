"""Input readers, the outcome writer and progress line, and rejected items."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer import Client
from producer.ops.inputs import detect_format, open_input, parse_cell, read
from producer.ops.outputs import ProgressBar, write_outcomes
from producer.rejects import Rejected
from taskfan.errors import InvalidInput
from taskfan.keys import QueueKeys
from taskfan.meta import JobState
from taskfan.outcomes import Outcome, RemoteError


def items(data: bytes, fmt: str, **options: object) -> list[object]:
    return list(read(io.BytesIO(data), fmt, source="in.x", **options))  # type: ignore[arg-type]


def test_format_comes_from_the_extension_else_jsonl() -> None:
    assert detect_format("a/b.csv") == "csv"
    assert detect_format("b.CSV.gz") == "csv"
    assert detect_format("x.txt") == "lines"
    assert detect_format("x.ndjson") == "jsonl"
    assert detect_format("-") == "jsonl"
    assert detect_format("data") == "jsonl"


def test_jsonl_one_value_per_line_blank_lines_skipped() -> None:
    data = b'\xef\xbb\xbf1\n\n  \n"two"\r\n[3, 4]\n{"a": null}'
    assert items(data, "jsonl") == [1, "two", [3, 4], {"a": None}]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"{'a': 1}", "not valid JSON: Expecting property name enclosed in double quotes"),
        (b"[1, 2", "not valid JSON: Expecting ',' delimiter (column 6)"),
        (b"NaN", "NaN is not standard JSON"),
        (b"\xff\xfe", "not UTF-8 text"),
    ],
)
def test_a_malformed_line_names_file_line_and_reason(line: bytes, why: str) -> None:
    with pytest.raises(InvalidInput) as info:
        items(b"1\n\n" + line + b"\n4\n", "jsonl")
    assert info.value.source == "in.x"
    assert info.value.line == 3
    assert str(info.value).startswith("in.x:3: ")
    assert why in str(info.value)


def test_skip_invalid_turns_bad_records_into_rejected_items() -> None:
    got = items(b"1\nnope\n3\n", "jsonl", skip_invalid=True)
    assert got[0] == 1 and got[2] == 3
    assert isinstance(got[1], Rejected)
    assert got[1].reason.startswith("in.x:2: not valid JSON")


def test_reading_is_lazy() -> None:
    def lines() -> Iterator[bytes]:
        yield b"1\n"
        yield b"2\n"
        raise AssertionError("read past what was asked for")

    reader = read(lines(), "jsonl", source="gen")
    assert next(reader) == 1
    assert next(reader) == 2


def test_csv_rows_become_dicts_of_strings_or_typed_values() -> None:
    data = b'name,n,x,flag,empty\nab,1,2.5,true,\n"c,d",-3,1e3,False,\n'
    assert items(data, "csv") == [
        {"name": "ab", "n": "1", "x": "2.5", "flag": "true", "empty": ""},
        {"name": "c,d", "n": "-3", "x": "1e3", "flag": "False", "empty": ""},
    ]
    assert items(data, "csv", csv_types="auto") == [
        {"name": "ab", "n": 1, "x": 2.5, "flag": True, "empty": None},
        {"name": "c,d", "n": -3, "x": 1000.0, "flag": False, "empty": None},
    ]
    assert [parse_cell(t) for t in ("nan", "1.", "007", "x1")] == ["nan", 1.0, 7, "x1"]


def test_csv_errors_name_the_record_line_and_reading_goes_on_when_skipping() -> None:
    data = b'a,b\n1,"multi\nline"\n\n2\n3,"q"x\n4,5\n'
    with pytest.raises(InvalidInput, match=r"^in\.x:5: has 1 fields, the header has 2$"):
        items(data, "csv")
    got = items(data, "csv", skip_invalid=True)
    assert got[0] == {"a": "1", "b": "multi\nline"}
    assert [r.reason for r in got[1:3] if isinstance(r, Rejected)] == [
        "in.x:5: has 1 fields, the header has 2",
        "in.x:6: not valid CSV: ',' expected after '\"'",
    ]
    assert got[3] == {"a": "4", "b": "5"}
    with pytest.raises(InvalidInput, match="distinct, non-empty column names"):
        items(b"a,a\n1,2\n", "csv", skip_invalid=True)


def test_lines_keep_every_line_as_a_string() -> None:
    assert items(b"a b\n\nc\r\n", "lines") == ["a b", "", "c"]


def test_open_input_reads_gzip_and_names_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(gzip.compress(b"1\n2\n"))
    with open_input(str(path)) as stream:
        assert list(read(stream, detect_format(str(path)), source=str(path))) == [1, 2]
    missing = str(tmp_path / "nothing.jsonl")
    with (
        pytest.raises(InvalidInput, match=r"nothing\.jsonl: cannot read: No such file"),
        open_input(missing),
    ):
        pass


def test_outcomes_are_written_as_json_lines() -> None:
    error = RemoteError("ValueError", "bad 3", "Traceback ...")
    outcomes = [
        Outcome(0, True, {"x": [1, 2]}),
        Outcome(1, False, None, error),
        Outcome(2, True, {1, 2}),  # a set (pickle jobs): JSON cannot carry it
    ]
    out = io.StringIO()
    assert write_outcomes(outcomes, out) == (1, 2, 0)  # ok, failed, of those cancelled
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0] == {"index": 0, "ok": True, "result": {"x": [1, 2]}}
    assert lines[1] == {
        "index": 1,
        "ok": False,
        "error": {"type": "ValueError", "message": "bad 3", "traceback": "Traceback ..."},
    }
    assert lines[2]["ok"] is False and lines[2]["error"]["type"] == "EncodeError"
    failed_only = io.StringIO()
    write_outcomes(outcomes, failed_only, failed_only=True)
    assert [json.loads(x)["index"] for x in failed_only.getvalue().splitlines()] == [1, 2]


def test_progress_line_shows_done_failed_rate_and_eta() -> None:
    now = [100.0]
    stream = io.StringIO()
    bar = ProgressBar(stream, enabled=True, tty=True, counted_from=0, clock=lambda: now[0])
    now[0] = 110.0
    bar.update(250, 3, 1000)
    assert "250/1000" in stream.getvalue()
    assert " 25%" in stream.getvalue()
    assert "3 failed" in stream.getvalue()
    assert "25.0/s" in stream.getvalue()
    assert "ETA 0:30" in stream.getvalue()
    bar.update(260, 3, 1000)  # too soon after the last draw: skipped
    assert "260/" not in stream.getvalue()
    now[0] = 140.0
    bar.update(1000, 3, 1000, force=True)
    bar.close()
    assert stream.getvalue().endswith("in 0:40\n")
    assert stream.getvalue().count("\r") == 2
    quiet = io.StringIO()
    ProgressBar(quiet, enabled=False).update(1, 0, 2, force=True)
    assert quiet.getvalue() == ""


def test_rejected_items_are_recorded_by_the_producer_in_input_order(r: redis.Redis) -> None:
    client = Client(r, codec="json")
    stream = [1, Rejected("f:2: bad"), Rejected("f:3: worse"), 4, 5, Rejected("f:6: bad")]
    job = client.map("tests.tasks:square", stream, batch_size=4)
    meta = job.meta()
    # batches: [1] queued, [2 rejects] recorded, [4] queued, [5] queued, [reject] recorded
    assert (meta.total, meta.batches, meta.failed, meta.batches_done) == (6, 5, 3, 2)
    assert r.xlen(QueueKeys("default").stream) == 3
    assert meta.state is JobState.ACTIVE


def test_a_job_of_only_rejected_items_finishes_without_a_worker(r: redis.Redis) -> None:
    client = Client(r, codec="json")
    job = client.map("tests.tasks:square", [Rejected("f:1: bad")] * 3)
    assert job.wait(timeout=5)
    got = list(job.outcomes())
    assert [(o.index, o.ok) for o in got] == [(0, False), (1, False), (2, False)]
    assert got[0].error is not None
    assert (got[0].error.type, got[0].error.message) == ("InvalidInput", "f:1: bad")
    assert r.xlen(QueueKeys("default").stream) == 0
