"""``Executor.shutdown`` and ``map(..., buffersize=N)``, as the stdlib's: the
``with`` block, ``shutdown(wait=True)`` and the interpreter's exit wait for the
calls a bounded map has sent; ``cancel_futures=True`` cancels them; the map
sends nothing after shutdown (its next value raises RuntimeError, as 3.14's
does when its ``submit`` is refused). And ``map`` refuses keyword arguments it
does not know, like the stdlib's."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest
import redis

from producer import Executor
from taskfan.keys import JobKeys, QueueKeys
from tests import tasks
from tests.conftest import StartWorker
from tests.helpers import wait_until
from tests.stdlib_futures.calls import sleep_and_write
from tests.stdlib_futures.test_shutdown import run_python
from tests.workers import WorkerProcess


def test_map_refuses_unknown_keywords(redis_url: str) -> None:
    with Executor(redis_url) as executor:
        with pytest.raises(TypeError):
            executor.map(tasks.square, [1, 2], bogus=1)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            executor.map(tasks.square, [1, 2], buffersize=1, bogus=1)  # type: ignore[call-arg]


def test_map_keeps_timeout_and_chunksize(redis_url: str, node: WorkerProcess) -> None:
    with Executor(redis_url) as executor:
        assert list(executor.map(tasks.square, [1, 2], timeout=60, chunksize=2)) == [1, 4]


def _outs(tmp_path: Path, n: int) -> list[Path]:
    return [tmp_path / f"out{i}" for i in range(n)]


def test_the_with_block_waits_for_the_calls_a_buffered_map_sent(
    redis_url: str, node: WorkerProcess, tmp_path: Path
) -> None:
    outs = _outs(tmp_path, 4)
    with Executor(redis_url) as executor:
        results = executor.map(
            sleep_and_write, [0.5] * 4, [str(o) for o in outs], ["x"] * 4, buffersize=2
        )
    # Read as soon as the block ends: there only if the exit waited.
    assert [o.exists() for o in outs] == [True, True, False, False]
    with pytest.raises(RuntimeError, match="after shutdown"):
        next(results)


def test_interpreter_exit_waits_for_a_buffered_map(
    redis_url: str, node: WorkerProcess, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    rc, _, err = run_python(
        f"""if 1:
        from producer import Executor
        from tests.stdlib_futures.calls import sleep_and_write
        t = Executor(URL)
        results = t.map(sleep_and_write, [1.0], [{str(out)!r}], ["apple"], buffersize=1)
        """,
        redis_url,
    )
    assert rc == 0, err
    assert out.read_text() == "apple"


def _stream_jobs(r: redis.Redis) -> list[str]:
    jobs: list[bytes] = r.zrange(QueueKeys("default").jobs, 0, -1)  # type: ignore[assignment]
    return [j.decode() for j in jobs]


def test_cancel_futures_cancels_a_buffered_map(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, tmp_path: Path
) -> None:
    worker = start_worker(processes=1)
    calls, release = tmp_path / "calls", tmp_path / "release"
    never = tmp_path / "never"
    executor = Executor(redis_url)
    # Item 0 holds the node's only process; item 1 waits behind it (in the queue,
    # or read ahead by the node: a soft cancel lets a batch it holds go only at its
    # next heartbeat, so whether it runs is not asserted); item 2 is never sent.
    results = executor.map(
        tasks.count_until, [str(calls), str(tmp_path / "second"), str(tmp_path / "third")],
        [str(release), str(release), str(never)], buffersize=2,
    )  # fmt: skip
    wait_until(calls.exists, 30, message=worker.log)
    executor.shutdown(wait=False, cancel_futures=True)
    (job_id,) = _stream_jobs(r)
    wait_until(lambda: r.hget(JobKeys(job_id).meta, "state") == b"cancelled", 10)
    release.write_text("go")
    with pytest.raises(RuntimeError, match="after shutdown"):
        next(results)
    with Executor(redis_url) as other:
        assert list(other.map(tasks.square, [3])) == [9]
    assert not (tmp_path / "third").exists()


def test_cancel_futures_cancels_a_map_and_its_iterator_raises_cancelled_error(
    redis_url: str, r: redis.Redis
) -> None:
    """No node: every call is pending. As the stdlib's, the map's next value
    raises CancelledError (JobCancelled is one)."""
    executor = Executor(redis_url)
    results = executor.map(tasks.square, [1, 2])
    executor.shutdown(wait=True, cancel_futures=True)  # nothing left to wait for
    (job_id,) = _stream_jobs(r)
    assert r.hget(JobKeys(job_id).meta, "state") == b"cancelled"
    with pytest.raises(concurrent.futures.CancelledError):
        next(results)
