"""Input "bombs": a line far longer than an item may be (a small .gz file of one
huge line, a CSV field with no line break, stdin) fails at that line with exit
2 and ``file:line: line longer than N bytes``, without reading it into memory;
a secret file is read only up to its limit."""

from __future__ import annotations

import gzip
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from producer.ops.inputs import read
from producer.rejects import Rejected
from taskfan.errors import ConfigError, InvalidInput
from taskfan.secret import MAX_SECRET_FILE, read_secret_file
from tests.cli_support import REPO, clean_environ, taskfan

MiB = 1024 * 1024
#: what a line of the bombs decompresses to
BOMB_BYTES = 1024 * MiB
#: what the CLI may hold while it reads one (the interpreter and its imports
#: take about 60 MiB; reading the line whole would take over a GiB)
MAX_RSS = 250 * MiB


def items(data: bytes, fmt: str, **options: object) -> list[object]:
    return list(read(io.BytesIO(data), fmt, source="in.x", **options))  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["jsonl", "lines", "csv"])
def test_a_line_over_the_cap_is_named_and_skipping_goes_on(fmt: str) -> None:
    head = b"a\n" if fmt == "csv" else b""
    long_line = b'"' + b"x" * 30 + b'"'
    data = head + b'"ok"\n' + long_line + b'\n"fits: 10"\r\n'
    line = 3 if fmt == "csv" else 2
    with pytest.raises(InvalidInput) as info:
        items(data, fmt, max_line_bytes=12)
    assert str(info.value).startswith(f"in.x:{line}: line longer than 12 bytes")
    got = items(data, fmt, max_line_bytes=12, skip_invalid=True)
    assert len(got) == 3 and isinstance(got[1], Rejected)
    assert got[1].reason.startswith(f"in.x:{line}: line longer than 12 bytes")
    assert got[2] in ("fits: 10", '"fits: 10"', {"a": "fits: 10"})


def test_the_cap_is_the_item_limit_by_default_and_counts_no_line_break() -> None:
    exactly = b"y" * 16
    assert items(exactly + b"\r\n" + exactly, "lines", max_item_bytes=18) == ["y" * 16] * 2
    with pytest.raises(InvalidInput, match=r"^in\.x:2: line longer than 15 bytes"):
        items(b"1\n" + exactly + b"\n", "lines", max_item_bytes=15)
    # no limit, no cap
    assert items(b"z" * 100_000, "lines") == ["z" * 100_000]


def test_a_line_of_nested_empty_lists_is_refused_before_it_is_decoded() -> None:
    # 1 MiB of "[]," decodes to 350,000 lists (about 23 MiB as Python objects): a
    # 16 MiB line of them once took the producer 560 MiB, and a node as much again.
    # Refused by the decoded-size estimate (taskfan.limits.decoded_size, what nodes
    # budget by), naming the line, before json.loads builds it.
    bomb = b"[" + b"[]," * (MiB // 3) + b"[]]"
    data = b'"ok"\n' + bomb + b"\n[[1, 2], [3, 4]]\n"
    with pytest.raises(InvalidInput) as info:
        items(data, "jsonl", max_item_bytes=MiB + MiB // 2)
    assert str(info.value).startswith("in.x:2: the item would take about "), info.value
    assert "decoded" in str(info.value)
    got = items(data, "jsonl", max_item_bytes=MiB + MiB // 2, skip_invalid=True)
    assert got[0] == "ok" and isinstance(got[1], Rejected) and got[2] == [[1, 2], [3, 4]]
    # an ordinary nested item of the same length passes
    matrix = ("[" + ",".join(["[1.25, 2.5, 3.75, 4.0, 5.5]"] * 40_000) + "]").encode()
    (rows,) = items(matrix, "jsonl", max_item_bytes=MiB + MiB // 2)
    assert isinstance(rows, list) and len(rows) == 40_000


def test_a_csv_record_of_many_short_lines_is_capped_as_a_whole() -> None:
    data = b'a,b\n1,2\n3,"' + b"\n" * 50 + b'"\n'
    with pytest.raises(InvalidInput, match=r"^in\.x:3: a record of several lines longer than 40"):
        items(data, "csv", max_line_bytes=40)
    # What follows a record cut off inside a quoted field is read afresh from the
    # next line on (it cannot be told apart from the field's own lines).
    got = items(data, "csv", max_line_bytes=40, skip_invalid=True)
    assert got[0] == {"a": "1", "b": "2"}
    assert isinstance(got[1], Rejected)
    assert got[1].reason.startswith("in.x:3: a record of several lines longer than 40 bytes")


def gzip_bomb(path: Path, line: bytes) -> None:
    """A .gz file of ``line`` followed by BOMB_BYTES of "x" and no line break,
    made of identical gzip members (a reader reads them as one stream)."""
    member = gzip.compress(b"x" * (16 * MiB), compresslevel=9)
    with path.open("wb") as out:
        out.write(gzip.compress(line))
        for _ in range(BOMB_BYTES // (16 * MiB)):
            out.write(member)
        out.write(gzip.compress(b"\n2\n"))
    assert path.stat().st_size < 2 * MiB


#: Runs ``argv[2:]`` and writes its peak resident memory (bytes) to ``argv[1]``. A
#: process's ru_maxrss starts from the high-water mark of the process that forked
#: it (the kernel keeps it across exec), so measuring a child of this test process
#: would report pytest's own peak; a small launcher in between reports the child's.
MEASURE = (
    "import os, sys\n"
    "pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "with open(sys.argv[1], 'w') as f: f.write(str(usage.ru_maxrss * 1024))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def measured(command: list[str], rss_path: Path) -> list[str]:
    """``command`` under the MEASURE launcher, which writes its peak RSS to ``rss_path``."""
    return [sys.executable, "-c", MEASURE, str(rss_path), *command]


def run_measured(args: list[str], err_path: Path, timeout: float = 120) -> tuple[int, str, int]:
    """Run ``taskfan ARGS``: its exit code, stderr, and peak resident memory in bytes."""
    rss_path = err_path.with_suffix(".rss")
    with err_path.open("w+b") as err:
        child = subprocess.Popen(
            measured(taskfan(*args), rss_path), cwd=REPO, env=clean_environ(),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True,
        )  # fmt: skip
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            pytest.fail(f"taskfan {' '.join(args)} still ran after {timeout}s")
    return child.returncode, err_path.read_text(), int(rss_path.read_text())


@pytest.mark.parametrize(
    ("name", "line", "at"),
    [("bomb.jsonl.gz", b"1\n", 2), ("bomb.txt.gz", b"one\n", 2), ("bomb.csv.gz", b"a\n1\n", 3)],
)
def test_a_gzip_bomb_fails_at_its_line_with_little_memory(
    redis_url: str, tmp_path: Path, name: str, line: bytes, at: int
) -> None:
    path = tmp_path / name
    gzip_bomb(path, line)
    code, err, rss = run_measured(
        ["enqueue", "tests.tasks:identity", "-i", str(path), "--max-item-bytes", "1M",
         "--redis-url", redis_url],
        tmp_path / "stderr",
    )  # fmt: skip
    assert code == 2, err
    assert err.startswith(f"Error: {path}:{at}: line longer than 1048576 bytes"), err
    assert rss < MAX_RSS, f"peak {rss // MiB} MiB"


def test_taskfan_run_stops_at_the_bomb_and_stops_its_worker(redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "bomb.txt.gz"
    gzip_bomb(path, b"one\n")
    code, err, rss = run_measured(
        ["run", "tests.tasks:identity", "-i", str(path), "--max-item-bytes", "1M",
         "--redis-url", redis_url, "--processes", "1"],
        tmp_path / "stderr",
    )  # fmt: skip
    assert code == 2, err
    assert f"Error: {path}:2: line longer than 1048576 bytes" in err
    assert rss < MAX_RSS, f"peak {rss // MiB} MiB"


def test_a_line_from_stdin_is_capped_too(redis_url: str, tmp_path: Path) -> None:
    """``zcat bomb.gz | taskfan enqueue -i -``: stdin is read a line at a time, capped."""
    err_path, rss_path = tmp_path / "stderr", tmp_path / "rss"
    with err_path.open("w+b") as err:
        command = taskfan("enqueue", "tests.tasks:identity", "-i", "-", "--format", "lines",
                          "--max-item-bytes", "1M", "--redis-url", redis_url)  # fmt: skip
        child = subprocess.Popen(
            measured(command, rss_path),
            cwd=REPO, env=clean_environ(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=err,
        )  # fmt: skip
        assert child.stdin is not None
        piece = b"x" * MiB
        try:  # up to 1 GiB of one line, until the reader stops reading
            child.stdin.write(b"fine\n")
            for _ in range(BOMB_BYTES // MiB):
                child.stdin.write(piece)
            child.stdin.close()
        except BrokenPipeError:
            pass
        child.wait(120)
    assert child.returncode == 2
    assert err_path.read_text().startswith("Error: <stdin>:2: line longer than 1048576 bytes")
    assert int(rss_path.read_text()) < MAX_RSS


def test_a_secret_file_is_read_only_up_to_its_limit(tmp_path: Path) -> None:
    """``--secret-file /dev/zero`` (or a wrong, huge file) is refused, not read whole."""
    big = tmp_path / "big"
    big.write_text("s" * 40 + "\n" + "x" * MAX_SECRET_FILE)
    for path in (str(big), "/dev/zero"):
        with pytest.raises(ConfigError, match=rf"^secret file {path}: longer than 65536"):
            read_secret_file(path)
