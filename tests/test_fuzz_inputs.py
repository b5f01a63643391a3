"""Fuzzing the CLI's input files: random bytes, wrong types, huge lines, bad UTF-8,
damaged gzip. Readers yield items or raise InvalidInput naming the file and
line; ``taskfan enqueue`` exits 0 or 2 with one line, never a traceback."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.ops import inputs
from producer.rejects import Rejected
from taskfan.codec import JSON
from taskfan.errors import InvalidInput
from tests.cli_support import clean_env, invoke

__all__ = ["clean_env"]

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: lines on the edges of what readers accept
EDGE_LINES = [
    b"", b"\r", b"1", b"-0", b"1e400", b"NaN", b"Infinity", b"null", b"\"x\"", b"[1,",
    b"{\"a\": 1}", b"{\"a\": 1, \"a\": 2}", b"\xef\xbb\xbf1", b"\xff\xfe", b"\xc3", b"\x00",
    b"9" * 5000, b"1." + b"0" * 5000, b"[" * 3000, b"\"" + b"x" * 5000 + b"\"", b"a,b",
    b"\"a\"\"b\",c", b"\"open", b",,,", b"x" * 200_000, b"\t\t", b"\xe2\x80\xa8",
]  # fmt: skip
lines = st.one_of(st.sampled_from(EDGE_LINES), st.binary(max_size=30))
files = st.lists(lines, max_size=12).map(lambda ls: b"".join(line + b"\n" for line in ls))
LIMIT = 4096


def read_all(data: bytes, fmt: str, skip_invalid: bool, csv_types: str) -> list[object]:
    stream = io.BytesIO(data)
    return list(
        inputs.read(
            stream, fmt, source="in.txt", csv_types=csv_types, skip_invalid=skip_invalid,
            max_item_bytes=LIMIT,
        )
    )  # fmt: skip


@FUZZ
@given(
    st.one_of(files, st.binary(max_size=200)),
    st.sampled_from(inputs.FORMATS),
    st.booleans(),
    st.sampled_from(inputs.CSV_TYPES),
)
def test_readers_yield_items_or_name_the_line(
    data: bytes, fmt: str, skip_invalid: bool, csv_types: str
) -> None:
    try:
        items = read_all(data, fmt, skip_invalid, csv_types)
    except InvalidInput as exc:
        assert exc.source == "in.txt" and exc.line is not None and exc.line >= 1
        assert str(exc).startswith(f"in.txt:{exc.line}: ")
        return
    for item in items:
        if isinstance(item, Rejected):
            assert skip_invalid and item.reason.startswith("in.txt:")
        else:
            assert len(JSON.dumps(item)) <= LIMIT  # every item can travel


def test_a_huge_line_is_named_not_queued() -> None:
    data = b'1\n"' + b"x" * 100_000 + b'"\n2\n'
    with pytest.raises(InvalidInput, match=r"^in.txt:2: line longer than 4096 bytes"):
        read_all(data, "jsonl", False, "str")
    assert read_all(data, "jsonl", True, "str")[0::2] == [1, 2]
    with pytest.raises(InvalidInput, match=r"^in\.txt:1: not UTF-8 text"):
        read_all(b"\xff\n", "lines", False, "str")


@pytest.mark.parametrize(
    "data",
    [gzip.compress(b"1\n2\n")[:-6], b"\x1f\x8b\x08\x00" + b"garbage" * 10, b"not gzip at all"],
)
def test_a_damaged_gzip_file_is_an_invalid_input(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(data)
    with (
        pytest.raises(InvalidInput, match=rf"^{path}: cannot read: "),
        inputs.open_input(str(path)) as stream,
    ):
        list(inputs.read(stream, "jsonl", source=str(path)))


@pytest.mark.usefixtures("clean_env")
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(files, st.sampled_from(["in.jsonl", "in.csv", "in.txt", "in.jsonl.gz"]))
def test_enqueue_exits_cleanly_on_any_file(
    redis_url: str, r: redis.Redis, tmp_path: Path, data: bytes, name: str
) -> None:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    result = invoke(
        "enqueue", "tests.tasks:identity", "-i", str(path), "--max-item-bytes", "4k",
        "--redis-url", redis_url,
    )  # fmt: skip
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        [line] = result.stderr.splitlines()
        assert line.startswith(f"Error: {path}")
    else:
        assert len(result.stdout.strip()) == 16  # a job id
