"""``Executor.submit`` calls made close together share batches (issue 18, item 2),
and every future keeps the stdlib's semantics: a call taken back from a shared
batch never runs while the batch's other calls do, exceptions stay per call, and
``shutdown(cancel_futures=True)`` takes back whole batches."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Executor
from producer.executor.coalesce import Sent
from taskfan import keys
from taskfan.errors import BrokerUnavailable, EncodeError
from tests import tasks
from tests.conftest import StartWorker
from tests.helpers import wait_until

STREAM = keys.QueueKeys("default").stream


class Gate:
    """Holds the executor's submitter at its first write until ``open()``, so
    that the calls submitted meanwhile are sent together in its next round."""

    def __init__(self, executor: Executor) -> None:
        self.event = threading.Event()
        self.entered = threading.Event()
        self.write = executor._write
        executor._write = self._write  # type: ignore[method-assign]

    def _write(self, batches: list[Sent]) -> None:
        self.entered.set()
        self.event.wait(60)
        self.write(batches)

    def open(self) -> None:
        self.event.set()


@pytest.fixture
def cheap(r: redis.Redis) -> Iterator[None]:
    """Nodes published tiny costs for the tests' functions: batches of many calls."""
    for fn in ("touch", "identity", "fail_if_multiple_of_7"):
        r.set(keys.cost(f"tests.tasks:{fn}"), "1e-06")
    yield


@pytest.fixture
def executor(redis_url: str) -> Iterator[Executor]:
    """An executor whose calls a failed test leaves behind are cancelled (with
    no node, a shutdown that waits for them would wait for good)."""
    executor = Executor(redis_url)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def _queued(r: redis.Redis, calls: int) -> list[int]:
    """Calls per entry in the queue, once ``calls`` calls are queued."""

    def counts() -> list[int]:
        entries: Any = r.xrange(STREAM)
        return [int(fields[b"n"]) for _, fields in entries]

    wait_until(lambda: sum(counts()) == calls, 30, message="calls queued")
    return counts()


def _held(executor: Executor, fn: Any, arg: Any) -> tuple[Gate, Callable[[], Any]]:
    """Submit a first call, which its caller sends (a thread here), held at the
    gate; the future's getter, once the gate is open."""
    gate = Gate(executor)
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(executor.submit(fn, arg)))
    thread.start()
    assert gate.entered.wait(60)

    def future() -> Any:
        thread.join(60)
        return got[0]

    return gate, future


def _submit_gated(executor: Executor, fn: Any, args: list[Any]) -> list[Any]:
    """Submit ``fn(arg)`` for each of ``args``: the first alone, the rest together."""
    gate, first = _held(executor, fn, args[0])
    rest = [executor.submit(fn, arg) for arg in args[1:]]
    gate.open()
    return [first(), *rest]


def test_calls_submitted_together_share_a_batch(
    executor: Executor, start_worker: StartWorker, r: redis.Redis, cheap: None
) -> None:
    with executor:
        futures = _submit_gated(executor, tasks.identity, list(range(50)))
        assert _queued(r, 50) == [1, 49]
        start_worker()
        assert [f.result(timeout=60) for f in futures] == list(range(50))


def test_exceptions_stay_with_their_call(
    redis_url: str, start_worker: StartWorker, r: redis.Redis, cheap: None
) -> None:
    start_worker()
    with Executor(redis_url) as executor:
        futures = _submit_gated(executor, tasks.fail_if_multiple_of_7, list(range(1, 30)))
        for x, future in zip(range(1, 30), futures, strict=True):
            if x % 7:
                assert future.result(timeout=60) == 2 * x
            else:
                with pytest.raises(ValueError, match=f"bad {x}"):
                    future.result(timeout=60)


def test_a_call_taken_back_from_a_shared_batch_never_runs(
    executor: Executor, start_worker: StartWorker, r: redis.Redis, tmp_path: Path, cheap: None
) -> None:
    paths = [str(tmp_path / f"ran-{i}") for i in range(10)]
    with executor:
        futures = _submit_gated(executor, tasks.touch, paths)
        assert _queued(r, 10) == [1, 9]
        assert futures[4].cancel() and futures[4].cancelled()
        assert futures[7].cancel() and futures[7].cancelled()
        assert futures[0].cancel()
        assert _queued(r, 7) == [3, 2, 2]  # around the gaps, sent again
        start_worker()
        for i, future in enumerate(futures):
            if i not in (0, 4, 7):
                assert future.result(timeout=60) == paths[i]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"ran-{i}" for i in range(10) if i not in (0, 4, 7)
    ]
    meta = executor.client.job(_job_id(r)).meta()
    assert (meta.state.value, meta.ok, meta.failed, meta.total) == ("finished", 7, 3, 10)


def test_shutdown_cancel_futures_takes_back_whole_batches(
    executor: Executor, r: redis.Redis, tmp_path: Path, cheap: None
) -> None:
    paths = [str(tmp_path / f"ran-{i}") for i in range(20)]
    futures = _submit_gated(executor, tasks.touch, paths)
    assert _queued(r, 20) == [1, 19]
    executor.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in futures)
    assert r.xlen(STREAM) == 0
    meta = executor.client.job(_job_id(r)).meta()
    assert (meta.state.value, meta.ok, meta.failed) == ("finished", 0, 20)


def test_a_call_taken_back_after_shutdown_without_wait(
    executor: Executor, start_worker: StartWorker, r: redis.Redis, tmp_path: Path, cheap: None
) -> None:
    """The job is sealed by then: the rest of the batch is sent again, and the
    job's size fixed anew before, so that the job finishes with all of them."""
    paths = [str(tmp_path / f"ran-{i}") for i in range(6)]
    futures = _submit_gated(executor, tasks.touch, paths)
    assert _queued(r, 6) == [1, 5]
    executor.shutdown(wait=False)
    assert futures[3].cancel()
    start_worker()
    assert [f.result(timeout=60) for i, f in enumerate(futures) if i != 3] == [
        p for i, p in enumerate(paths) if i != 3
    ]
    executor.shutdown(wait=True)
    assert not (tmp_path / "ran-3").exists()
    job = executor.client.job(_job_id(r))
    assert job.wait(timeout=30)
    meta = job.meta()
    assert (meta.state.value, meta.ok, meta.failed, meta.batches) == ("finished", 5, 1, 4)


def test_a_call_cancelled_before_it_is_sent_never_enters_the_job(
    executor: Executor, start_worker: StartWorker, r: redis.Redis, tmp_path: Path, cheap: None
) -> None:
    marker = tmp_path / "ran"
    with executor:
        gate, first = _held(executor, tasks.identity, 1)
        future = executor.submit(tasks.touch, str(marker))  # buffered behind it
        assert future.cancel() and future.cancelled()
        gate.open()
        start_worker()
        assert first().result(timeout=60) == 1
    assert not marker.exists()
    meta = executor.client.job(_job_id(r)).meta()
    assert (meta.state.value, meta.ok, meta.failed, meta.total) == ("finished", 1, 0, 1)


def _job_id(r: redis.Redis) -> str:
    listed: Any = r.zrange(keys.QueueKeys("default").jobs, 0, -1)
    (job_id,) = [j.decode() for j in listed]
    return job_id


class _FailsOnce:
    """Stands in for the executor's ``_write``: once armed, its next call raises
    what a dropped connection makes it raise, before anything reaches Redis."""

    def __init__(self, executor: Executor) -> None:
        self.write = executor._write
        self.armed = False
        executor._write = self._write  # type: ignore[method-assign]

    def _write(self, batches: list[Sent]) -> None:
        if self.armed:
            self.armed = False
            raise BrokerUnavailable("submitting: Redis is unreachable (injected)")
        self.write(batches)


class _PicklesOnce:
    """Pickles the first time (``submit`` checks each call alone), then refuses
    (the submitter's encoding of the batch)."""

    def __init__(self) -> None:
        self.pickled = 0

    def __reduce__(self) -> Any:
        self.pickled += 1
        if self.pickled > 1:
            raise TypeError("cannot pickle this twice")
        return (tasks.identity, (7,))


def test_calls_that_could_not_be_sent_still_let_the_job_finish(
    executor: Executor, start_worker: StartWorker, r: redis.Redis
) -> None:
    """A round whose write failed (Redis dropped the connection) or whose batch
    would not encode fails its futures; the job's size counts its batch all the
    same, so the batch is recorded as failed before the job is sealed. Else the
    job would stay active for good, its keys never expiring."""
    start_worker()
    faults = _FailsOnce(executor)
    with executor:
        assert executor.submit(tasks.identity, 1).result(timeout=60) == 1
        faults.armed = True
        lost = executor.submit(tasks.identity, 2)
        with pytest.raises(BrokerUnavailable, match="injected"):
            lost.result(timeout=60)
        unencodable = executor.submit(tasks.identity, _PicklesOnce())
        with pytest.raises(EncodeError, match="twice"):
            unencodable.result(timeout=60)
        assert executor.submit(tasks.identity, 3).result(timeout=60) == 3
    job = executor.client.job(_job_id(r))
    assert job.wait(timeout=30)
    meta = job.meta()
    assert (meta.state.value, meta.ok, meta.failed, meta.total) == ("finished", 2, 2, 4)


def test_a_calls_result_comes_back_with_the_event_that_announces_it(
    executor: Executor, start_worker: StartWorker
) -> None:
    """The collector knows which batches it waits for: their results fields are
    read in the pipeline of the events read (``Events.read``'s ``prefetch``),
    so a recorded batch's results arrive in the round trip that brings its
    event, not in an HMGET of their own after it (a round trip per result on
    the ``submit(...).result()`` path, issue 18 item 2)."""
    start_worker()
    with executor:
        assert executor.submit(tasks.identity, 0).result(timeout=60) == 0  # warm
        separate: list[Any] = []
        hmget = executor.client.redis.hmget

        def counted(name: Any, fields: Any, *args: Any) -> Any:
            if name.endswith(b":results" if isinstance(name, bytes) else ":results"):
                separate.append(fields)
            return hmget(name, fields, *args)

        executor.client.redis.hmget = counted  # type: ignore[method-assign,assignment]
        for i in range(1, 21):
            assert executor.submit(tasks.identity, i).result(timeout=60) == i
    assert separate == []
