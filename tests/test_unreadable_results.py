"""Results and exceptions a reader cannot decode cost only their own item.

An exception that pickles and cannot be unpickled (its ``__init__`` takes two
arguments), values whose unpickling raises or rebuilds them wrongly, and a value
or exception of a class only the node can import: ``outcomes()``,
``results()``, ``errors()``, ``as_completed()``, the Executor's futures and
``taskfan results`` (from a shell that cannot import the task's module) report
every other item normally, and the bad one as failed with the type, message and
traceback text the node stored (or ``UnreadableResult`` for a value).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from producer import Client, Executor
from producer.executor.futures import raise_original
from producer.ops.outputs import outcome_line
from taskfan.codec import PICKLE
from taskfan.errors import ProtocolError, TaskFailed
from taskfan.outcomes import Outcome, ResultEntry, encode_result, iter_outcomes
from tests import tasks
from tests.conftest import StartWorker
from worker.pool.outcome_parts import encode

#: each bad input: (the type of its error, words of its message)
BAD = {
    tasks.TWO_ARG_ERROR: ("TwoArgError", "code 7: two arguments"),
    tasks.REBUILD_RAISES: ("UnreadableResult", "refuses to be unpickled"),
    tasks.REBUILDS_WRONGLY: ("UnreadableResult", "RebuildsWrongly"),
    tasks.NODE_ONLY_VALUE: ("UnreadableResult", tasks.NODE_ONLY_MODULE),
    tasks.NODE_ONLY_ERROR: ("NodeOnlyError", "only the node can import"),
    tasks.BAD_STR: ("BadStrError", "<exception str() failed"),
}


def _items() -> list[int]:
    items = [1]
    for x in BAD:
        items += [x, len(items) + 1]
    return items


def _check(outcomes: list[Outcome], items: list[int]) -> None:
    assert sorted(o.index for o in outcomes) == list(range(len(items)))
    for outcome in outcomes:
        x = items[outcome.index]
        if x not in BAD:
            assert (outcome.ok, outcome.value) == (True, x * x), outcome
            continue
        type_name, words = BAD[x]
        assert not outcome.ok and outcome.error is not None, (x, outcome)
        assert (outcome.error.type, words in outcome.error.message) == (type_name, True), outcome
        assert outcome.error.traceback, outcome


@pytest.mark.parametrize("batch_size", [None, 1])
def test_one_unreadable_item_leaves_the_others_readable(
    batch_size: int | None, start_worker: StartWorker, client: Client
) -> None:
    node = start_worker(processes=1)
    items = _items()
    size = batch_size or len(items)
    job = client.map(tasks.hostile, items, batch_size=size, chunksize=size)
    assert job.wait(timeout=60), node.log()
    _check(list(job.outcomes()), items)
    _check(list(job.as_completed()), items)
    assert [o.index for o in job.errors()] == [i for i, x in enumerate(items) if x in BAD]
    results = job.results()
    assert next(results) == 1
    with pytest.raises(TaskFailed) as failed:
        next(results)
    assert (failed.value.index, failed.value.type_name) == (1, "TwoArgError")
    assert (
        "code 7: two arguments" in failed.value.message and "in hostile" in failed.value.traceback
    )
    assert node.proc.poll() is None


def test_an_unreadable_exception_keeps_its_text(start_worker: StartWorker, client: Client) -> None:
    start_worker(processes=1)
    job = client.map(tasks.hostile, [tasks.TWO_ARG_ERROR, tasks.NODE_ONLY_ERROR], batch_size=2)
    two_args, node_only = job.outcomes()
    assert two_args.error is not None and node_only.error is not None
    assert (two_args.error.exception, node_only.error.exception) == (None, None)
    assert "TwoArgError: code 7: two arguments" in two_args.error.traceback
    assert "NodeOnlyError: raised with a class only the node can import" in (
        node_only.error.traceback
    )


def test_executor_futures_of_unreadable_items_fail_with_their_type(
    start_worker: StartWorker, client: Client
) -> None:
    start_worker(processes=1)
    items = _items()
    with Executor(client) as executor:
        futures = [executor.submit(tasks.hostile, x) for x in items]
        for x, future in zip(items, futures, strict=True):
            error = future.exception(timeout=60)
            if x not in BAD:
                assert (error, future.result()) == (None, x * x)
                continue
            if x == tasks.BAD_STR:  # readable: raised as itself, as ProcessPoolExecutor does
                assert type(error) is tasks.BadStrError
                continue
            assert isinstance(error, TaskFailed), (x, error)
            assert error.type_name == BAD[x][0] and BAD[x][1] in error.message, (x, error)
        results = executor.map(tasks.hostile, [1, tasks.NODE_ONLY_VALUE, 3])
        assert next(results) == 1
        with pytest.raises(TaskFailed, match="UnreadableResult"):
            next(results)


def test_cli_results_from_a_shell_that_cannot_import_the_task(
    start_worker: StartWorker, client: Client, redis_url: str, tmp_path: Path
) -> None:
    """Once it stopped after the first batch: the next one held a BadStrError."""
    start_worker(processes=1)
    items = _items()
    job = client.map(tasks.hostile, items, batch_size=2)
    assert job.wait(timeout=60)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKFAN_", "PYTHONPATH"))}
    probe = [sys.executable, "-c", "import tests.tasks"]
    assert subprocess.run(probe, cwd=tmp_path, env=env, capture_output=True).returncode != 0
    done = subprocess.run(
        [sys.executable, "-m", "taskfan", "results", job.id, "--redis-url", redis_url,
         "--allow-pickle"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["index"] for line in lines] == list(range(len(items)))
    for line, x in zip(lines, items, strict=True):
        if x not in BAD:
            assert line == {"index": line["index"], "ok": True, "result": x * x}
            continue
        # Here every value or exception of a class from tests.tasks is unreadable.
        assert not line["ok"] and line["error"]["traceback"], line
        expected = BAD[x][0]
        if x in (tasks.REBUILD_RAISES, tasks.REBUILDS_WRONGLY):
            assert "tests" in line["error"]["message"], line  # No module named 'tests'
        assert line["error"]["type"] == expected, line


# ------------------------------------------------------------- the layout, unit by unit


def _decoded(values: list[object], errors: list[list[object]], limit: int | None = None) -> object:
    blob, _ = encode(values, errors, [], PICKLE, limit)
    return pickle.loads(blob)


def test_plain_data_keeps_the_one_piece_layout() -> None:
    """The fast path is unchanged: plain values (and builtin exceptions) in one piece."""
    decoded = _decoded([1, "a", {"b": [2.0]}, None], [[3, "ValueError", "m", "tb", ValueError()]])
    assert isinstance(decoded, list) and decoded[0] == [1, "a", {"b": [2.0]}, None]


def test_a_value_of_a_user_class_is_encoded_item_by_item() -> None:
    values: list[object] = [1, tasks.RebuildRaises(5), 3, tasks.RebuildsWrongly(6)]
    blob, failed = encode(values, [], [], PICKLE, None)
    assert failed == 0 and pickle.loads(blob)[0] is None
    entry = ResultEntry.parse(encode_result(0, 4, 0, [blob]), "test")
    outcomes = list(iter_outcomes(entry, PICKLE, "test"))
    assert [(o.ok, o.value) for o in outcomes[::2]] == [(True, 1), (True, 3)]
    for outcome, name in zip(outcomes[1::2], ("RebuildRaises", "RebuildsWrongly"), strict=True):
        assert outcome.error is not None and outcome.error.type == "UnreadableResult"
        assert f"tests.tasks.{name}" in outcome.error.message, outcome.error
        assert "Traceback" in outcome.error.traceback


def test_item_by_item_keeps_limits_and_errors() -> None:
    error = [1, "TwoArgError", "code 7", "tb", tasks.TwoArgError(7, "x"), 41]
    blob, failed = encode([tasks.RebuildRaises(0), None, "x" * 500], [error], [], PICKLE, 400)
    assert failed == 2
    entry = ResultEntry.parse(encode_result(0, 3, 2, [blob]), "test")
    first, second, third = iter_outcomes(entry, PICKLE, "test")
    assert first.error is not None and first.error.type == "UnreadableResult"
    assert second.error is not None and second.error.type == "TwoArgError"
    assert second.error.exception is None and second.error.retry_input == (41,)
    assert third.error is not None and third.error.type == "ResultTooLarge"


class _ExitingDict(dict[str, int]):
    def items(self) -> Any:
        raise SystemExit("_ExitingDict.items exits")


def test_cli_lines_of_values_json_cannot_write_are_errors() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    for value in (deep, _ExitingDict(a=1), {1, 2}):
        line, ok = outcome_line(Outcome(0, True, value))
        record = json.loads(line)
        assert not ok and record["error"]["type"] == "EncodeError", record


def test_a_chunk_an_older_node_wrote_in_one_piece_fails_only_its_items() -> None:
    """Before item-by-item encoding, one unreadable value spoiled its chunk: the
    chunk's items fail, the entry's other chunks read, and nothing raises."""
    old = pickle.dumps([[1, tasks.RebuildRaises(2)], [], []], protocol=5)
    good = pickle.dumps([[9], [], []], protocol=5)
    for blobs, bad in (([old, good], [0, 1]), ([good, old], [1, 2])):
        entry = ResultEntry.parse(encode_result(0, 3, 0, blobs), "test")
        outcomes = list(iter_outcomes(entry, PICKLE, "test"))
        assert [o.index for o in outcomes if not o.ok] == bad
        assert [o.value for o in outcomes if o.ok] == [9]
        error = outcomes[bad[0]].error
        assert error is not None and error.type == "UnreadableResult"
        assert "refuses to be unpickled" in error.message
    both = ResultEntry.parse(encode_result(0, 4, 0, [old, old]), "test")
    with pytest.raises(ProtocolError, match="cannot decode a chunk"):
        list(iter_outcomes(both, PICKLE, "test"))


class _LockedError(Exception):
    def __setattr__(self, name: str, value: Any) -> None:
        raise SystemExit("_LockedError takes no attributes")


def test_the_executor_raises_task_failed_for_an_exception_it_cannot_chain() -> None:
    """Raising the remote exception itself sets its __cause__: its class may refuse."""
    failed = TaskFailed("j", 3, "_LockedError", "m", "tb", _LockedError("m"))
    assert raise_original(failed) is failed


def test_a_keyboard_interrupt_from_a_value_fails_one_future_in_the_collector(
    start_worker: StartWorker, client: Client
) -> None:
    """Outside the main thread no Ctrl-C lands: a KeyboardInterrupt there is the
    value's own, and fails its future alone (it once stopped the collector)."""
    start_worker(processes=1)
    with Executor(client) as executor:
        futures = [executor.submit(tasks.interrupts_when_read, x) for x in (2, -1, 3)]
        assert futures[0].result(timeout=60) == 4
        error = futures[1].exception(timeout=60)
        assert isinstance(error, TaskFailed) and error.type_name == "UnreadableResult", error
        assert "KeyboardInterrupt" in error.message
        assert futures[2].result(timeout=60) == 9
