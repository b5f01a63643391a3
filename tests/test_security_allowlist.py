"""Threat: any importable function run by a json batch (threat 2). The function
allowlist: checked before anything is imported, on dotted boundaries; look-alike
module names and attribute chains out of an allowed module are refused."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client
from taskfan.codec import JSON
from taskfan.errors import ConfigError, FunctionNotAllowed
from taskfan.keys import QueueKeys
from taskfan.options import CallMode
from taskfan.outcomes import ResultEntry, encode_result, iter_outcomes
from taskfan.protocol import BatchEntry
from taskfan.refs import check_allow_prefix, module_allowed, resolve
from taskfan.settings import Settings
from tests.conftest import StartWorker
from tests.helpers import dead_letters
from worker.core.batches import Delivery
from worker.core.chunk_sizing import ChunkSizer
from worker.core.entry_checks import Guard
from worker.core.scheduler import Scheduler
from worker.pool.child import run_chunk

MARKED = "tests.marker_task"


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file tests/marker_task.py writes when anything imports it (in this
    process, or in a node started with this environment)."""
    path = tmp_path / "imported"
    monkeypatch.setenv("TASKFAN_TEST_IMPORT_MARKER", str(path))
    monkeypatch.delitem(sys.modules, MARKED, raising=False)
    return path


@pytest.mark.parametrize(
    ("module", "allow", "allowed"),
    [
        ("myapp", ("myapp",), True),
        ("myapp.tasks", ("myapp",), True),
        ("myapp.tasks.deep", ("myapp.tasks",), True),
        ("myappx", ("myapp",), False),
        ("myappx.tasks", ("myapp",), False),
        ("my", ("myapp",), False),
        ("myapp", ("myapp.tasks",), False),
        ("other", ("myapp", "other"), True),
        ("anything", (), True),
    ],
)
def test_prefixes_match_on_dotted_boundaries(
    module: str, allow: tuple[str, ...], allowed: bool
) -> None:
    assert module_allowed(module, allow) is allowed


@pytest.mark.parametrize("bad", ["", "my app", "myapp.", ".myapp", "my-app", "myapp:fn"])
def test_allowlist_entries_must_be_module_names(bad: str) -> None:
    with pytest.raises(ConfigError, match="is not a module name"):
        check_allow_prefix(bad)
    with pytest.raises(ConfigError, match="is not a module name"):
        Settings(allow=(bad,))
    assert Settings.from_env({"TASKFAN_ALLOW": "myapp, other.tasks"}).allow == (
        "myapp",
        "other.tasks",
    )


def test_a_module_outside_the_allowlist_is_never_imported(marker: Path) -> None:
    with pytest.raises(FunctionNotAllowed, match=f"module '{MARKED}' is outside its allowlist"):
        resolve(f"{MARKED}:echo", allow=("tests.tasks",))
    assert not marker.exists() and MARKED not in sys.modules
    assert resolve(f"{MARKED}:echo", allow=("tests",))("x") == "x"
    assert marker.exists()


@pytest.mark.parametrize(
    "ref",
    [
        "tests.tasks:os.system",  # os, imported into an allowed module
        "tests.tasks:Path",  # a class imported from pathlib
        "tests.tasks:__builtins__.get",  # dunders lead anywhere
        "tests.tasks:square.__globals__.get",
    ],
)
def test_references_cannot_walk_out_of_an_allowed_module(ref: str) -> None:
    with pytest.raises(FunctionNotAllowed, match="not allowed on this node"):
        resolve(ref, allow=("tests.tasks",))


def test_the_child_fails_each_item_of_a_function_not_allowed(marker: Path) -> None:
    result = run_chunk(f"{MARKED}:echo", "json", "1", [1, 2], allow=("tests.tasks",))
    entry = ResultEntry.parse(encode_result(0, 2, 2, [result.parts[0].blob]), "t")
    errors = [o.error for o in iter_outcomes(entry, JSON, "t")]
    assert [e.type for e in errors if e] == ["FunctionNotAllowed"] * 2
    assert result.failed == 2 and not marker.exists()


def test_the_scheduler_refuses_a_batch_before_its_payload_or_module(marker: Path) -> None:
    scheduler = Scheduler(1, ChunkSizer(1), guard=Guard(allow=("tests.tasks",)))
    entry = BatchEntry("job1", 0, 0, 2, f"{MARKED}:echo", "json", CallMode.ONE, 0, b"[1,2]")
    fields = {k.encode(): v if isinstance(v, bytes) else str(v).encode()
              for k, v in entry.fields().items()}  # fmt: skip
    delivery = Delivery(QueueKeys("default"), b"1-0", fields)
    # Another node serving the queue may allow it: back to the queue, unrun.
    handed = scheduler.accept(delivery)
    assert handed is not None and handed.give_back and not handed.failed
    # Once no live node serving the queue allows it (here: none but this one),
    # its items fail, saying so.
    scheduler.intake.unrunnable.decide(["default"], [])
    completed = scheduler.accept(delivery)
    assert completed is not None and completed.failed == 2 and completed.dead_reason
    assert "outside its allowlist (tests.tasks" in completed.dead_reason
    assert "no live node serving queue default can run" in completed.dead_reason
    assert not scheduler.pending and not marker.exists()


def test_a_node_runs_only_allowed_functions(
    redis_url: str,
    r: redis.Redis,
    start_worker: StartWorker,
    marker: Path,
    tmp_path: Path,
) -> None:
    worker = start_worker(
        "--allow", "tests.tasks", "--no-pickle",
        env={"TASKFAN_TEST_IMPORT_MARKER": str(marker)},
    )  # fmt: skip
    client = Client.from_url(redis_url, codec="json")
    assert list(client.map("tests.tasks:square", [1, 2, 3]).results(timeout=60)) == [1, 4, 9]
    refused = client.map(f"{MARKED}:echo", [1, 2], batch_size=2)
    shell = tmp_path / "shell-ran"
    escape = client.map("tests.tasks:os.system", [f"touch {shell}"])
    for job, kind in ((refused, "FunctionNotAllowed"), (escape, "FunctionNotAllowed")):
        assert job.wait(timeout=60)
        assert {o.error.type for o in job.outcomes() if o.error} == {kind}
    assert "outside its allowlist" in next(refused.errors()).error.message  # type: ignore[union-attr]
    assert "defined in 'posix'" in next(escape.errors()).error.message  # type: ignore[union-attr]
    assert not marker.exists() and not shell.exists()
    letters: Any = dead_letters(r, "default", count=2)
    # Both refused once no live node serving the queue would run them: dead letters
    # (the import refused in the pool process, too: worker.core.unrunnable).
    reasons = sorted(fields[b"reason"] for _, fields in letters)
    assert len(reasons) == 2, reasons
    assert all(b"no live node serving queue default can run" in why for why in reasons)
    assert b"is outside its allowlist" in reasons[0] and b"defined in 'posix'" in reasons[1]
    assert "functions from tests.tasks only" in worker.log()


def test_a_forged_initializer_outside_the_allowlist_runs_nothing(
    redis_url: str,
    r: redis.Redis,
    start_worker: StartWorker,
    marker: Path,
    tmp_path: Path,
) -> None:
    """An entry written straight to Redis (no secret) whose function is allowed
    but whose initializer (``i``) is not: ``os:system``, or a module that marks
    its import. Neither runs or is imported on a ``--no-pickle --allow`` node;
    the entry's items fail with InitializerError, and the node serves on."""
    client = Client.from_url(redis_url, codec="json")
    stream = QueueKeys("default").stream
    shell = tmp_path / "shell-ran"
    jobs = []
    for index, (ref, args) in enumerate(
        [("os:system", [f"touch {shell}"]), (f"{MARKED}:echo", [1])]
    ):
        jobs.append(client.map("tests.tasks:square", [index], initializer="tests.tasks:noop",
                               initargs=(0,)))  # fmt: skip
        # What a forger without the secret writes: the job's own entry, its 'i' changed.
        entries: Any = r.xrange(stream)
        entry_id, fields = entries[-1]
        r.xdel(stream, entry_id)
        r.xadd(stream, {**fields, b"i": ref.encode(), b"ia": JSON.dumps(args)})
    start_worker(
        "--allow", "tests.tasks", "--no-pickle", env={"TASKFAN_TEST_IMPORT_MARKER": str(marker)}
    )
    for job in jobs:
        (outcome,) = job.outcomes(timeout=60)
        assert outcome.error is not None and outcome.error.type == "InitializerError", outcome
        assert "FunctionNotAllowed" in outcome.error.message
    assert not shell.exists() and not marker.exists()
    assert list(client.map("tests.tasks:square", [3]).results(timeout=60)) == [9]
