"""Task options and job numbers with absurd values: refused at enqueue with an
error naming the option and its value; a node given them in a raw entry
dead-letters that batch with the reason and keeps serving; and no value reaches
a wait, a timer or a deadline uncapped (``taskfan.bounds``)."""

from __future__ import annotations

import math
import signal
import time
from typing import Any, cast

import fakeredis
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from producer import Client
from taskfan import bounds
from taskfan.errors import ConfigError, ProtocolError
from taskfan.keys import QueueKeys
from taskfan.options import TaskOptions
from tests import tasks
from tests.conftest import StartWorker
from worker.core.batches import Batch, Chunk
from worker.core.chunk_sizing import ChunkSizer
from worker.core.scheduler import Scheduler
from worker.pool import child
from worker.pool.child import ChunkResult, Retry, backoff_delay

STREAM = QueueKeys("default").stream
DEAD = QueueKeys("default").dead

#: (option, value): each out of its bounds
ABSURD: list[tuple[str, Any]] = [
    *[
        (name, value)
        for name in ("timeout", "hard_timeout")
        for value in (1e10, 10**400, math.inf, math.nan, -1, 0, 1e-9, True, "5")
    ],
    *[("retries", value) for value in (-1, 10**6, 10**400, True, 1.0, math.nan)],
    *[
        (name, value)
        for name in ("backoff", "backoff_max")
        for value in (1e10, math.inf, math.nan, -0.5, True, 10**400)
    ],
    ("retry_on", tuple(f"E{i}" for i in range(1000))),
    ("retry_on", ("x" * 10_000,)),
    ("retry_on", ("",)),
]


def _id(value: Any) -> str:
    return bounds.shown(value)[:20]


@pytest.mark.parametrize(("name", "value"), ABSURD, ids=[f"{n}={_id(v)}" for n, v in ABSURD])
def test_task_options_out_of_bounds_are_refused_naming_the_option(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name) as caught:
        TaskOptions(**{name: value})
    assert bounds.shown(value)[:40] in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("timeout", bounds.MAX_TIMEOUT),
        ("hard_timeout", 0.001),
        ("retries", bounds.MAX_RETRIES),
        ("backoff", 0),
        ("backoff_max", bounds.MAX_BACKOFF),
        ("retry_on", ("ValueError",)),
    ],
)
def test_task_options_at_their_bounds_are_accepted(name: str, value: Any) -> None:
    assert getattr(TaskOptions(**{name: value}), name) == value


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"hard_timeout": 1e10}, "hard_timeout must be"),
        ({"timeout": 10**30}, "timeout must be"),
        ({"retries": 10**6}, "retries must be"),
        ({"backoff_max": math.inf}, "backoff_max must be"),
    ],
)
def test_map_refuses_absurd_options_at_enqueue(options: dict[str, Any], words: str) -> None:
    client = Client(fakeredis.FakeRedis(), codec="json")
    with pytest.raises(ConfigError, match=words):
        client.map(tasks.square, [1], **options)


@pytest.mark.parametrize(
    ("numbers", "words"),
    [
        ({"result_ttl": 10**12}, "result_ttl must be"),
        ({"result_ttl": -1}, "result_ttl must be"),
        ({"result_ttl": True}, "result_ttl must be"),
        ({"batch_size": 2**40}, "batch_size must be"),
        ({"chunksize": 2**40}, "chunksize must be"),
        ({"chunksize": True}, "chunksize must be"),
    ],
)
def test_map_refuses_absurd_job_numbers_at_enqueue(numbers: dict[str, Any], words: str) -> None:
    r = fakeredis.FakeRedis()
    client = Client(r, codec="json")
    with pytest.raises(ConfigError, match=words):
        client.map(tasks.square, [1], **numbers)
    assert r.xlen(STREAM) == 0


@pytest.mark.parametrize(
    "text",
    [
        b'{"hard_timeout":1e10}',
        b'{"timeout":1e400}',
        b'{"retries":true}',
        b'{"retries":1000000}',
        b'{"backoff":-1}',
        b'{"backoff_max":' + b"9" * 400 + b"}",
    ],
)
def test_an_entry_with_absurd_options_does_not_parse(text: bytes) -> None:
    with pytest.raises(ProtocolError, match="bad task options"):
        TaskOptions.decode(text, "entry 1-0")


# ------------------------------------------------------------ defence in depth


def _smuggled(**values: Any) -> TaskOptions:
    """Options holding values their checks would refuse, as if a path were missed."""
    options = TaskOptions()
    for name, value in values.items():
        object.__setattr__(options, name, value)
    return options


def _batch(options: TaskOptions, count: int = 2) -> Batch:
    from taskfan.options import CallMode
    from taskfan.protocol import BatchEntry
    from worker.core.batches import Delivery

    entry = BatchEntry(
        "0123456789abcdef", 0, 0, count, "tests.tasks:square", "json", CallMode.ONE, 0,
        b"[" + b",".join([b"1"] * count) + b"]", options,
    )  # fmt: skip
    return Batch(
        Delivery(QueueKeys("default"), b"1-0", {}), entry, [1] * count, 0.0, remaining=count
    )


def test_a_smuggled_hard_timeout_reaches_the_pool_deadline_capped() -> None:
    scheduler = Scheduler(1, ChunkSizer(1), clock=lambda: 100.0)
    chunk = Chunk(_batch(_smuggled(hard_timeout=1e300)), 0, 1)
    scheduler.sent(chunk, 100.0)
    assert chunk.deadline == 100.0 + bounds.MAX_TIMEOUT


def test_a_smuggled_retry_delay_reaches_the_retry_heap_capped() -> None:
    scheduler = Scheduler(1, ChunkSizer(1), clock=lambda: 100.0)
    batch = _batch(TaskOptions(retries=1))
    scheduler.batches[(batch.delivery.queue.name, batch.delivery.entry_id)] = batch
    chunk = Chunk(batch, 0, 2)
    scheduler.sent(chunk, 100.0)
    result = ChunkResult((), 0.0, (Retry(0, 2, math.inf), Retry(1, 2, math.nan)))
    assert scheduler.done(chunk, result, now=100.0) is None
    assert scheduler.next_retry() == 100.0  # NaN is no wait at all
    assert scheduler.retries.pop_due(100.0 + bounds.MAX_BACKOFF)[0][1] == [(0, 2), (1, 2)]


def test_backoff_of_a_huge_attempt_number_is_capped_not_an_overflow() -> None:
    options = TaskOptions(retries=bounds.MAX_RETRIES, backoff=1.0, backoff_max=bounds.MAX_BACKOFF)
    assert backoff_delay(10**6, options) <= bounds.MAX_BACKOFF
    assert backoff_delay(10**6, _smuggled(backoff=1e308, backoff_max=math.inf)) <= (
        bounds.MAX_BACKOFF
    )


def test_a_smuggled_soft_timeout_reaches_the_timer_capped() -> None:
    previous = signal.signal(signal.SIGALRM, signal.SIG_IGN)
    try:
        result = child.run_chunk(
            "tests.tasks:square", "json", "1", [3], _smuggled(timeout=1e300), (), None
        )
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert (result.failed, len(result.parts)) == (0, 1)


@pytest.mark.parametrize(
    ("seconds", "waited"),
    [(1e300, 5.0), (math.inf, 5.0), (math.nan, 0.0), (-3.0, 0.0), (2.5, 2.5), (True, 0.0)],
)
def test_capped_is_a_wait_from_zero_to_the_bound(seconds: float, waited: float) -> None:
    assert bounds.capped(seconds, 5.0) == waited


# ------------------------------------------------------------ a real node

#: raw 'o' fields a producer would refuse; a node must dead-letter each, naming it
RAW_OPTIONS = [
    (b'{"hard_timeout":1e10}', "hard_timeout"),
    (b'{"timeout":1e10}', "timeout"),
    (b'{"retries":100000000,"backoff":0}', "retries"),
    (b'{"retries":2,"backoff":1e300,"backoff_max":1e300}', "backoff"),
    (b'{"hard_timeout":-1}', "hard_timeout"),
    (b'{"retries":true}', "retries"),
]


def _rewrite_options(r: redis.Redis, job_id: str, options: bytes) -> bytes:
    """Replace the job's one entry by a copy with raw task options, as anyone who
    can write to Redis could (no secret configured)."""
    entries: Any = r.xrange(STREAM)
    [(entry_id, fields)] = [(i, f) for i, f in entries if f[b"j"] == job_id.encode()]
    r.xdel(STREAM, entry_id)
    fields[b"o"] = options
    return cast(bytes, r.xadd(STREAM, fields))


def test_a_node_dead_letters_raw_entries_with_absurd_options_and_keeps_serving(
    redis_url: str, r: redis.Redis, start_worker: StartWorker
) -> None:
    client = Client.from_url(redis_url, codec="json")
    jobs = []
    for raw, _ in RAW_OPTIONS:
        jobs.append(client.map(tasks.square, [1, 2, 3], batch_size=3))
        _rewrite_options(r, jobs[-1].id, raw)
    worker = start_worker("--no-pickle", processes=1)
    for job, (_, name) in zip(jobs, RAW_OPTIONS, strict=True):
        outcomes = list(job.outcomes(timeout=60))
        assert [o.ok for o in outcomes] == [False] * 3, worker.log()
        error = outcomes[0].error
        assert error is not None and error.type == "BadOptions", error
        assert f"{name} must be" in error.message, error.message
    letters: Any = r.xrange(DEAD)
    assert len(letters) == len(RAW_OPTIONS)
    assert all(b"bad task options" in fields[b"reason"] for _, fields in letters)
    assert list(client.map(tasks.square, range(4)).results(timeout=60)) == [0, 1, 4, 9]
    assert worker.proc.poll() is None, worker.log()
    assert "Traceback" not in worker.log()


def test_the_node_loop_waits_at_most_its_cap_whatever_deadline_a_value_made(
    r: redis.Redis,
) -> None:
    """SimpleQueue.get(timeout=1e10) raises OverflowError: the loop's wait is capped."""
    from taskfan.settings import Settings
    from worker.node.node import Node

    node = Node(Settings(processes=1), client=r)
    chunk = Chunk(_batch(TaskOptions()), 0, 1)
    chunk.deadline = time.monotonic() + 1e300
    node.scheduler.in_pool.add(chunk)
    assert node._until_next_deadline() == bounds.MAX_LOOP_WAIT
    chunk.deadline = math.nan
    assert node._until_next_deadline() == 0.0
    node.scheduler.in_pool.clear()
    assert node._until_next_deadline() is None  # nothing due: an event wakes it


# ------------------------------------------------------------ any options at all

NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)
OPTIONS = st.dictionaries(
    st.sampled_from(["timeout", "hard_timeout", "retries", "backoff", "backoff_max"]),
    NUMBERS,
    max_size=5,
)


@settings(max_examples=400, deadline=None)
@given(OPTIONS)
def test_any_options_in_an_entry_parse_within_bounds_or_not_at_all(data: dict[str, Any]) -> None:
    """Whatever numbers an entry's options hold, a node gets options within the
    bounds of taskfan.bounds, or a ProtocolError naming the entry: nothing else."""
    import json

    try:
        options = TaskOptions.decode(json.dumps(data), "entry 1-0")
    except ProtocolError as exc:
        assert str(exc).startswith("entry 1-0: bad task options")
        return
    for name in ("timeout", "hard_timeout"):
        value = getattr(options, name)
        assert value is None or bounds.MIN_TIMEOUT <= value <= bounds.MAX_TIMEOUT
    assert type(options.retries) is int and 0 <= options.retries <= bounds.MAX_RETRIES
    assert 0 <= options.backoff <= bounds.MAX_BACKOFF
    assert 0 <= options.backoff_max <= bounds.MAX_BACKOFF


def test_waits_refuse_a_nan_timeout_instead_of_waiting_for_ever(redis_url: str) -> None:
    """No deadline made of NaN ever passes; the standard library's locks refuse
    it (ValueError), and so do a job's waits, rather than wait for ever."""
    import threading

    job = Client.from_url(redis_url, queue="nobody").map(tasks.square, [1])
    waits = {
        "wait": lambda: job.wait(timeout=math.nan),
        "results": lambda: list(job.results(timeout=math.nan)),
        "outcomes": lambda: list(job.outcomes(timeout=math.nan)),
    }
    raised: dict[str, BaseException] = {}

    def run(name: str) -> None:
        try:
            waits[name]()
        except BaseException as exc:  # kept for the assertions below
            raised[name] = exc

    for name in waits:
        thread = threading.Thread(target=run, args=(name,), daemon=True)
        thread.start()
        thread.join(30)
        assert not thread.is_alive(), f"{name}(timeout=nan) still waits"
        assert isinstance(raised.get(name), ValueError), (name, raised.get(name))
        assert "timeout" in str(raised[name]) and "nan" in str(raised[name])
