"""Any picklable callable (issue 17 item 2): partials, callable instances, bound,
static and class methods run on a real node through Client.map/submit and the
Executor, shown readably, and checked by ``--allow`` by the function they call;
lambdas and functions of ``__main__`` travel by value only when asked."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client, Executor
from producer.callables import describe
from producer.enqueue import Enqueuer
from producer.job import Job
from producer.ops.dashboard import Dashboard
from producer.records import JobSpec
from taskfan import keys
from taskfan.callables import METHOD, PARTIAL, VALUE
from taskfan.codec import JSON, PICKLE
from taskfan.errors import EncodeError, FunctionReferenceError, LimitExceeded, TaskFailed
from taskfan.meta import JobMeta
from taskfan.options import CallMode
from taskfan.protocol import BatchEntry
from taskfan.settings import Settings
from taskfan.signing import Keyring
from tests import tasks
from tests.cli_support import invoke
from tests.conftest import StartWorker
from tests.helpers import dead_letters, wait_until
from worker.core.entry_checks import Guard

#: (callable, argument, result, label) for each kind of callable
CASES: list[tuple[Callable[..., Any], Any, Any, str]] = [
    (functools.partial(tasks.scaled, k=2), 5, 10, "partial(tests.tasks:scaled, k=2)"),
    (tasks.Scorer(3), 5, 15, "tests.tasks:Scorer(...).__call__"),
    (tasks.Model(1).predict, 5, 6, "tests.tasks:Model.predict"),
    (tasks.Model.double, 5, 10, "tests.tasks:Model.double"),
    (tasks.Model.tag, 5, "Model:5", "tests.tasks:Model.tag"),
    (
        functools.partial(tasks.Model(10).predict),
        5,
        15,
        "partial(tests.tasks:Model.predict)",
    ),
]


def test_each_callable_travels_as_the_function_it_calls() -> None:
    kinds = [describe(fn, PICKLE) for fn, *_ in CASES]
    assert [(d.fn_ref, d.wrap) for d in kinds] == [
        ("tests.tasks:scaled", PARTIAL),
        ("tests.tasks:Scorer.__call__", METHOD),
        ("tests.tasks:Model.predict", METHOD),
        ("tests.tasks:Model.double", ""),
        ("tests.tasks:Model.tag", ""),
        ("tests.tasks:Model.predict", METHOD),
    ]
    assert [d.shown for d in kinds] == [label for *_, label in CASES]
    # json: a partial's arguments as JSON; an object cannot travel
    assert describe(functools.partial(tasks.scaled, 2, k=3), JSON).bound == b'[[2],{"k":3}]'
    with pytest.raises(EncodeError, match="use the pickle codec"):
        describe(tasks.Scorer(3), JSON)
    # bound values other than numbers show as their type: status has more readers
    assert describe(functools.partial(tasks.add, "token"), PICKLE).label == (
        "partial(tests.tasks:add, <str>)"
    )
    with pytest.raises(EncodeError, match=r"partial\(tests.tasks:scaled.*cannot be encoded"):
        describe(functools.partial(tasks.scaled, k=object()), JSON)  # type: ignore[arg-type]


def test_picklable_callables_run_on_a_node(
    redis_url: str, r: redis.Redis, client: Client, start_worker: StartWorker
) -> None:
    start_worker()
    for fn, arg, expected, label in CASES:
        job = client.map(fn, [arg, arg])
        assert list(job.results(timeout=60)) == [expected, expected], label
        assert list(client.submit(fn, arg).results(timeout=60)) == [expected], label
    with Executor(client) as executor:
        futures = [executor.submit(fn, arg) for fn, arg, *_ in CASES]
        assert [f.result(timeout=60) for f in futures] == [e for _, _, e, _ in CASES]
        for fn, arg, expected, label in CASES:
            assert list(executor.map(fn, [arg], timeout=60)) == [expected], label
    # a partial's own keywords win, as they do locally
    job = client.submit(functools.partial(tasks.scaled, k=2), 5, offset=1)
    assert list(job.results(timeout=60)) == [11]

    # the cost nodes publish is the function's, whatever wraps it (producer.sizing)
    wait_until(lambda: r.exists(keys.cost("tests.tasks:scaled")), timeout=30,
               message="the cost of tests.tasks:scaled")  # fmt: skip

    shown = client.map(functools.partial(tasks.scaled, k=2), [1])
    assert shown.wait(timeout=60)
    status = json.loads(invoke("status", "--json", "--redis-url", redis_url).stdout)
    functions = {job["id"]: job["function"] for job in status["jobs"]}
    assert functions[shown.id] == "partial(tests.tasks:scaled, k=2)"
    text = invoke("inspect", shown.id, "--redis-url", redis_url).stdout
    assert "partial(tests.tasks:scaled, k=2)" in text
    board = json.loads(Dashboard(r, limit=100, min_interval=0.0).overview())
    functions = {job["id"]: job["function"] for job in board["jobs"]}
    assert functions[shown.id] == "partial(tests.tasks:scaled, k=2)"


def test_a_partial_job_retries_with_its_bound_arguments(
    client: Client, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker()
    flag = tmp_path / "times"
    job = client.map(functools.partial(tasks.fail_times, times=1), [str(flag)])
    assert job.wait(timeout=60)
    assert [o.error.type for o in job.outcomes() if o.error] == ["ConnectionError"]
    assert job.retry_failed() == 1
    assert job.wait(timeout=60)
    assert [o.ok for o in job.outcomes()] == [True]


def test_bound_state_every_batch_carries_is_bounded(fake: Any) -> None:
    client = Client(fake, max_item_bytes=1024, max_batch_bytes=4096)
    with pytest.raises(LimitExceeded, match=r"bound state encodes to 3.0 KiB, over half of"):
        client.map(functools.partial(tasks.add, b"x" * 3000), [1])
    with Executor(client) as executor, pytest.raises(LimitExceeded):
        executor.submit(functools.partial(tasks.add, b"x" * 3000), 1)
    assert not fake.keys("*")  # refused before anything was written


def test_bound_state_that_does_not_load_fails_its_job_only(
    client: Client, start_worker: StartWorker
) -> None:
    start_worker()
    broken = client.map(functools.partial(tasks.add, tasks.RebuildRaises(1)), [1, 2])
    assert broken.wait(timeout=60)
    errors = [o.error for o in broken.outcomes() if o.error]
    assert [e.type for e in errors] == ["BoundStateError"] * 2
    assert "cannot load what tests.tasks:add is bound to (partial)" in errors[0].message
    assert "refuses to be unpickled" in errors[0].message
    # The node still runs tests.tasks:add for other jobs (it is not "unrunnable").
    assert list(client.map(functools.partial(tasks.add, 1), [1]).results(timeout=60)) == [2]


def test_lambdas_and_closures_are_refused_with_the_fix(client: Client) -> None:
    def closure(x: int) -> int:
        return x

    for fn in (lambda x: x, closure, functools.partial(closure, 1)):
        with pytest.raises(FunctionReferenceError, match=r"by_value=True"):
            client.map(fn, [1])
        with Executor(client) as executor, pytest.raises(FunctionReferenceError):
            executor.submit(fn, 1)


def test_allow_checks_the_function_a_callable_calls(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker("--allow", "tests.tasks", "--no-pickle", queue="allowed")
    start_worker("--allow", "tests.task", "--no-pickle", queue="lookalike")
    allowed = Client.from_url(redis_url, "allowed", no_pickle=True)
    runs = allowed.map(functools.partial(tasks.scaled, k=2), [1, 2])
    assert list(runs.results(timeout=60)) == [2, 4]
    outside = allowed.map(functools.partial(wait_until, timeout=1), [1])
    # "tests.task" is a prefix of "tests.tasks" as text, not as a module
    lookalike = Client.from_url(redis_url, "lookalike", no_pickle=True).map(
        functools.partial(tasks.scaled, k=2), [1]
    )
    for job in (outside, lookalike):
        assert job.wait(timeout=60)
        [error] = [o.error for o in job.outcomes() if o.error]
        assert error.type == "FunctionNotAllowed", error.message
        assert "outside its allowlist" in error.message
    # Entries written by hand: a dunder other than a class's own __call__, and
    # a name of an allowed module that leads to os.system, wrapped.
    shell = tmp_path / "shell-ran"
    forged = [
        ("tests.tasks:Model.__init__", METHOD, b'[1,[],{}]', "walk dunder attributes"),
        ("tests.tasks:os.system", PARTIAL, json.dumps([[f"touch {shell}"], {}]).encode(),
         "defined in 'posix'"),
        ("tests.tasks:os.system.__call__", PARTIAL, b"[[],{}]", "defined in None"),
    ]  # fmt: skip
    for ref, wrap, bound, why in forged:
        spec = JobSpec("allowed", ref, JSON, CallMode.ONE, 1, 0, 600, wrap=wrap, bound=bound)
        job = Job(allowed, Enqueuer(allowed.redis, spec).run([1]), codec="json")
        assert job.wait(timeout=60), ref
        errors = [o.error for o in job.outcomes() if o.error]
        assert [e.type for e in errors] == ["FunctionNotAllowed"], (ref, errors)
        assert why in errors[0].message, errors[0].message
    assert not shell.exists()


def test_allowlisted_nodes_run_functions_by_value_only_when_their_operator_opts_in(
    redis_url: str, start_worker: StartWorker
) -> None:
    start_worker("--allow", "tests.tasks", queue="listed")
    start_worker("--allow", "tests.tasks", "--allow-by-value", queue="optin")
    refused = Client.from_url(redis_url, "listed", by_value=True).map(lambda x: x, [1])
    assert refused.wait(timeout=60)
    [error] = [o.error for o in refused.outcomes() if o.error]
    assert error.type == "FunctionNotAllowed", error.message
    assert "was sent by value" in error.message and "--allow-by-value" in error.message
    optin = Client.from_url(redis_url, "optin", by_value=True)
    assert list(optin.map(lambda x: x * 2, [1, 2]).results(timeout=60)) == [2, 4]
    # the allowlist still holds for functions by reference there
    outside = optin.map(functools.partial(wait_until, timeout=1), [1])
    assert outside.wait(timeout=60)
    assert [o.error.type for o in outside.outcomes() if o.error] == ["FunctionNotAllowed"]


def test_a_guard_refuses_by_value_unless_its_node_opts_in() -> None:
    entry = BatchEntry(
        "job1", 0, 0, 1, "__main__:lambda", "pickle", CallMode.ONE, 0, b"x", wrap=VALUE, bound=b"y"
    )
    assert Guard().refusal(entry) is None  # an open node runs pickle anyway
    refused = Guard(allow=("tests.tasks",)).refusal(entry)
    assert refused is not None and refused[0] == "FunctionNotAllowed"
    assert "--allow-by-value" in refused[1]
    assert Guard(allow=("tests.tasks",), allow_by_value=True).refusal(entry) is None
    settings = Settings.from_env({"TASKFAN_ALLOW": "tests.tasks", "TASKFAN_ALLOW_BY_VALUE": "1"})
    opted_in = Guard.from_settings(settings)
    assert opted_in.refusal(entry) is None
    assert "functions from tests.tasks only, and functions sent by value" in opted_in.describe()
    no_pickle = Guard(no_pickle=True, allow=("tests.tasks",), allow_by_value=True)
    refused = no_pickle.refusal(entry)
    assert refused is not None and refused[0] == "PickleRefused"
    assert "sent by value" in refused[1]


def test_functions_by_value_run_when_asked_and_no_pickle_nodes_refuse_them(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker()
    start_worker("--no-pickle", queue="strict")
    client = Client.from_url(redis_url, by_value=True)
    offset = 3
    assert list(client.map(lambda x: x + offset, [1, 2]).results(timeout=60)) == [4, 5]
    with Executor(redis_url, by_value=True) as executor:
        assert executor.submit(lambda a, b: a * b, 6, 7).result(timeout=60) == 42
        assert list(executor.map(lambda x: -x, [1, 2], timeout=60)) == [-1, -2]
    # a function of __main__: a script run where no node could import it
    script = tmp_path / "by_value_script.py"
    script.write_text(
        "import sys\n"
        "from producer import Client\n"
        "def triple(x):\n"
        "    return 3 * x\n"
        "if __name__ == '__main__':\n"
        "    client = Client.from_url(sys.argv[1], by_value=True)\n"
        "    print(list(client.map(triple, [1, 2]).results(timeout=60)))\n"
    )
    done = subprocess.run(
        [sys.executable, str(script), redis_url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PATH": ""},
    )
    assert done.stdout.strip() == "[3, 6]", done.stderr

    strict = Client.from_url(redis_url, "strict", by_value=True)
    job = strict.map(lambda x: x, [1])
    assert job.wait(timeout=60)
    [error] = [o.error for o in job.outcomes() if o.error]
    assert error.type == "PickleRefused" and "sent by value" in error.message
    letters: Any = dead_letters(r, "strict")
    assert any(b"sent by value" in fields[b"reason"] for _, fields in letters)
    with pytest.raises(TaskFailed, match="sent by value"):
        list(strict.submit(lambda: 1).results(timeout=60))


def test_the_meta_signature_covers_bound_state() -> None:
    keyring = Keyring.of("s" * 32)
    assert keyring is not None
    meta: dict[str, str | bytes] = {
        "id": "j", "fn": "m:f", "nonce": "n", "wrap": "partial", "bound": b"[[1],{}]"
    }  # fmt: skip
    signature = keyring.sign_meta(meta)
    raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in meta.items()}
    raw[b"sig"] = signature.encode()
    keyring.verify_meta(raw, "job j meta")
    for changed in ({b"bound": b"[[2],{}]"}, {b"label": b"m:g"}, {b"wrap": b"method"}):
        with pytest.raises(Exception, match="bad signature"):
            keyring.verify_meta({**raw, **changed}, "job j meta")
    # and a batch entry's signature covers its wrap and bound state like any field
    entry = BatchEntry("j", 0, 0, 1, "m:f", "json", CallMode.ONE, 0, b"[1]", wrap=PARTIAL,
                       bound=b"[[1],{}]")  # fmt: skip
    signed = keyring.sign_batch("q", entry.fields())
    fields = {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in signed.items()}
    keyring.verify_batch("q", fields)
    for name, value in ((b"v", b"[[2],{}]"), (b"w", b"method")):
        with pytest.raises(Exception, match="bad signature"):
            keyring.verify_batch("q", {**fields, name: value})
    without = {k: v for k, v in raw.items() if k not in (b"wrap", b"bound")}
    with pytest.raises(Exception, match="bad signature"):
        keyring.verify_meta(without, "job j meta")
    parsed = JobMeta.parse(
        "j",
        {
            **raw,
            b"state": b"finished",
            b"mode": b"1",
            b"queue": b"q",
            b"codec": b"json",
            b"label": b"partial(m:f, 1)",
        },
    )
    assert (parsed.wrap, parsed.bound, parsed.function) == (
        "partial",
        b"[[1],{}]",
        "partial(m:f, 1)",
    )
