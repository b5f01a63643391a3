"""Per-process setup: a job's initializer runs once in each pool process before
its first item of that job there; one that raises fails that job's items there
with InitializerError and breaks nothing else (``worker.pool.process_setup``)."""

from __future__ import annotations

import json
import re
import sys
from concurrent.futures import BrokenExecutor
from pathlib import Path
from typing import Any

import pytest

from producer import Client, Executor
from taskfan.codec import get_codec
from taskfan.errors import InitializerError, ProtocolError, TaskFailed
from taskfan.options import CallMode
from taskfan.protocol import BatchEntry
from tests import init_calls, tasks
from tests.conftest import StartWorker
from worker.pool import process_setup as setup
from worker.pool.child import run_chunk
from worker.pool.outcome_parts import Part

PICKLE = get_codec("pickle")
INIT = "tests.init_calls:init"
FAIL = "tests.init_calls:init_fail"


@pytest.fixture(autouse=True)
def _fresh_process_state() -> Any:
    """run_chunk runs here in the test process: start each test as a new process."""
    setup._jobs.clear()
    init_calls.CALLS.clear()
    init_calls.INITIALIZER_STATUS = "uninitialized"
    yield
    setup._jobs.clear()


def _values(parts: tuple[Part, ...]) -> list[Any]:
    values, errors, _ = PICKLE.loads(parts[0].blob)[:3]
    return [None if any(e[0] == i for e in errors) else v for i, v in enumerate(values)]


def _errors(parts: tuple[Part, ...]) -> list[list[Any]]:
    errors: list[list[Any]] = PICKLE.loads(parts[0].blob)[1]
    return errors


def _run(job: str, ref: str, args: list[Any], items: list[Any], allow: tuple[str, ...] = ()) -> Any:
    return run_chunk(
        "tests.init_calls:get_init_status", "pickle", "1", items, allow=allow,
        init=(job, ref, PICKLE.dumps(args)),
    )  # fmt: skip


def test_the_initializer_runs_once_per_job_in_a_process_before_its_first_item() -> None:
    assert _values(_run("job1", INIT, ["one"], [0, 1]).parts) == ["one", "one"]
    assert _values(_run("job1", INIT, ["one"], [2]).parts) == ["one"]
    assert init_calls.CALLS == {"one": 1}
    # Another job's initializer runs when this process first meets that job.
    assert _values(_run("job2", INIT, ["two"], [0]).parts) == ["two"]
    assert init_calls.CALLS == {"one": 1, "two": 1}


def test_a_process_remembers_a_bounded_number_of_jobs() -> None:
    for n in range(setup.REMEMBERED + 1):
        _run(f"job{n}", INIT, ["x"], [0])
    assert len(setup._jobs) == setup.REMEMBERED
    assert "job0" not in setup._jobs  # the least recent is forgotten: met again, it runs again
    _run("job0", INIT, ["x"], [0])
    assert init_calls.CALLS == {"x": setup.REMEMBERED + 2}


def test_an_initializer_that_raises_fails_every_item_of_its_job_in_that_process() -> None:
    result = _run("job1", FAIL, [], [0, 1, 2])
    assert result.failed == 3 and result.unrunnable is None
    errors = _errors(result.parts)
    assert [e[0] for e in errors] == [0, 1, 2]
    _, type_name, message, traceback, exc, item = errors[0]
    assert item == 0  # its input, kept for a retry round
    assert type_name == "InitializerError"
    assert "job job1: its initializer tests.init_calls:init_fail raised ValueError: " in message
    assert "error in initializer" in message
    assert 'raise ValueError("error in initializer")' in traceback  # the initializer's own
    assert isinstance(exc, InitializerError) and isinstance(exc, BrokenExecutor)
    # Remembered: the job's later chunks there fail alike, without running it again.
    again = _run("job1", FAIL, [], [3])
    assert _errors(again.parts)[0][1] == "InitializerError"
    # Another job in the same process is not affected.
    assert _values(_run("job2", INIT, ["fine"], [0]).parts) == ["fine"]


def test_an_initializer_refused_by_the_allowlist_fails_its_items_not_the_process() -> None:
    result = _run("job1", "os:system", ["echo never"], [0], allow=("tests",))
    (error,) = _errors(result.parts)
    assert error[1] == "InitializerError" and "FunctionNotAllowed" in error[2], error


def test_bad_initargs_fail_the_items() -> None:
    result = run_chunk(
        "tests.init_calls:get_init_status", "pickle", "1", [0],
        init=("job1", INIT, PICKLE.dumps("not a list")),
    )  # fmt: skip
    assert "initargs must be a list" in _errors(result.parts)[0][2]


def test_entries_carry_the_initializer_and_parse_it_back() -> None:
    entry = BatchEntry(
        "job1", 0, 0, 1, "tests.tasks:square", "pickle", CallMode.ONE, 0, PICKLE.dumps([1]),
        initializer=INIT, initargs=PICKLE.dumps([1]),
    )  # fmt: skip
    fields = {
        k.encode(): v if isinstance(v, bytes) else str(v).encode()
        for k, v in entry.fields().items()
    }
    assert BatchEntry.parse(fields, "entry") == entry
    for bad, says in [
        ({**fields, b"i": b"not a ref"}, "field 'i': bad initializer reference"),
        ({k: v for k, v in fields.items() if k != b"ia"}, "field 'i' without field 'ia'"),
        ({k: v for k, v in fields.items() if k != b"i"}, "field 'ia' without field 'i'"),
    ]:
        with pytest.raises(ProtocolError, match=says):
            BatchEntry.parse(bad, "entry")


def test_initargs_without_an_initializer_are_refused(redis_url: str) -> None:
    client = Client.from_url(redis_url)
    with pytest.raises(TypeError, match="initargs given without an initializer"):
        client.map(tasks.square, [1], initargs=(1,))


# ----------------------------------------------------------------- on a node


def test_client_map_runs_the_initializer_in_each_process_once(
    redis_url: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker(processes=2)
    client = Client.from_url(redis_url)
    log = tmp_path / "inits"
    job = client.map(
        init_calls.pid_and_status, range(40), initializer=init_calls.touch_init,
        initargs=(str(log),), chunksize=1, batch_size=4,
    )  # fmt: skip
    pids = {pid for pid, _ in job.results(timeout=60)}
    runs = log.read_text().split()
    assert sorted(runs) == sorted(set(runs)), "a process ran the job's initializer twice"
    assert pids <= {int(pid) for pid in runs}  # every process that ran an item had run it


def test_a_failing_initializer_fails_its_job_and_the_node_serves_others(
    redis_url: str, start_worker: StartWorker
) -> None:
    worker = start_worker(processes=2)
    client = Client.from_url(redis_url)
    bad = client.map(tasks.square, range(6), initializer=init_calls.init_fail, batch_size=2)
    good = client.map(tasks.square, range(6), initializer=init_calls.init, initargs=("ok",))
    outcomes = list(bad.outcomes(timeout=60))
    assert [o.ok for o in outcomes] == [False] * 6
    error = outcomes[0].error
    assert error is not None and error.type == "InitializerError"
    assert "ValueError: error in initializer" in error.traceback
    with pytest.raises(TaskFailed):
        list(bad.results(timeout=10))
    assert list(good.results(timeout=60)) == [x * x for x in range(6)]
    assert worker.proc.poll() is None


def test_executor_initializer_with_json_codec(redis_url: str, start_worker: StartWorker) -> None:
    start_worker(processes=1)
    with Executor(redis_url, codec="json", initializer=init_calls.init, initargs=("j",)) as ex:
        assert ex.submit(init_calls.get_init_status).result(timeout=60) == "j"
        assert list(ex.map(init_calls.get_init_status, [1, 2])) == ["j", "j"]
    assert init_calls.INITIALIZER_STATUS == "uninitialized"  # nothing ran here


def test_a_retry_round_runs_with_the_jobs_initializer(
    redis_url: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    """Retry rounds are built from the job's meta, which keeps the initializer; a
    fresh node (whose process never met the job) runs it before the retry."""
    first = start_worker(processes=1)
    client = Client.from_url(redis_url)
    job = client.map(
        init_calls.status_after_failing, [str(tmp_path / "calls")],
        initializer=init_calls.init, initargs=("retried",),
    )  # fmt: skip
    assert [o.ok for o in job.outcomes(timeout=60)] == [False]
    first.close()
    start_worker(processes=1)
    assert job.retry_failed() == 1
    assert job.wait(timeout=60)
    assert list(job.results(timeout=60)) == ["retried"]


def test_the_executor_refuses_what_process_pool_executor_refuses(redis_url: str) -> None:
    from concurrent.futures import ProcessPoolExecutor

    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"initializer": 42}, TypeError, "initializer must be a callable"),
        ({"max_tasks_per_child": 0}, ValueError, "max_tasks_per_child must be >= 1"),
        ({"max_tasks_per_child": "3"}, TypeError, "max_tasks_per_child must be an integer"),
    ]
    for kwargs, error, words in cases:
        with pytest.raises(error) as ours:
            Executor(redis_url, **kwargs)
        assert str(ours.value) == words
        if "max_tasks_per_child" in kwargs and sys.version_info < (3, 11):
            continue  # ProcessPoolExecutor takes max_tasks_per_child from 3.11
        with pytest.raises(error) as stdlib:
            ProcessPoolExecutor(1, **kwargs)
        assert str(stdlib.value) == words


def test_inspect_names_the_initializer(redis_url: str) -> None:
    from tests.cli_support import invoke

    job = Client.from_url(redis_url).map(
        tasks.square, [1], initializer=init_calls.init, initargs=(1,)
    )
    result = invoke("inspect", job.id, "--json", "--redis-url", redis_url)
    assert json.loads(result.stdout)["initializer"] == INIT
    text = invoke("inspect", job.id, "--redis-url", redis_url).stdout
    assert re.search(rf"^  initializer +{INIT}$", text, re.MULTILINE), text


@pytest.mark.parametrize(
    ("initializer", "error"),
    [
        (init_calls.init_system_exit, "InitializerError"),
        (init_calls.init_keyboard_interrupt, "InitializerError"),
        (init_calls.init_unprintable, "InitializerError"),
        (init_calls.init_exit_process, "WorkerProcessDied"),
    ],
    ids=["SystemExit", "KeyboardInterrupt", "unprintable", "os._exit"],
)
def test_a_hostile_initializer_fails_its_job_only_beside_another_job_in_the_pool(
    redis_url: str, start_worker: StartWorker, initializer: Any, error: str
) -> None:
    """What is not an Exception, raised by an initializer or ending its process,
    fails that job's items; another job's items in the same pool all succeed."""
    worker = start_worker(processes=2)
    client = Client.from_url(redis_url)
    good = client.map(tasks.slow_square, range(20), batch_size=2, chunksize=1)
    bad = client.map(tasks.square, range(4), batch_size=2, initializer=initializer)
    outcomes = list(bad.outcomes(timeout=120))
    assert [o.error.type if o.error else None for o in outcomes] == [error] * 4, worker.log()
    assert list(good.results(timeout=120)) == [x * x for x in range(20)]
    assert worker.proc.poll() is None, worker.log()
