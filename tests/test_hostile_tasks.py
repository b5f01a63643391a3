"""Tasks that raise what is not an Exception (SystemExit, KeyboardInterrupt,
GeneratorExit, a BaseException of their own), or whose result or exception
misbehaves while the pool process encodes it, fail only their own item: a real
node keeps running, records the item's type, message and traceback, and logs
one line naming the job, batch and item."""

from __future__ import annotations

from typing import Any

import pytest

from producer import Client
from tests import tasks
from tests.conftest import StartWorker
from tests.helpers import wait_until

#: hostile inputs raising a BaseException in the task or in the pool process
ESCAPES = {
    tasks.SYS_EXIT: ("SystemExit", "3"),
    tasks.SYSTEM_EXIT: ("SystemExit", "the task called SystemExit"),
    tasks.KEYBOARD_INTERRUPT: ("KeyboardInterrupt", ""),
    tasks.GENERATOR_EXIT: ("GeneratorExit", "the task raised GeneratorExit"),
    tasks.CUSTOM_BASE: ("CustomBaseError", "a BaseException of the task's own"),
    tasks.EXITING_STR: ("ExitingStrError", "<exception str() failed"),
    tasks.BAD_STR: ("BadStrError", "<exception str() failed"),
    tasks.BAD_REPR: ("BadReprError", "no repr"),
}

#: run with no options (the children's hot path), and with options (their other path)
OPTIONS: dict[str, dict[str, Any]] = {"plain": {}, "options": {"timeout": 60.0, "retries": 1}}


def _items(hostile: list[int]) -> list[int]:
    """Good items around each hostile one."""
    items = [1]
    for x in hostile:
        items += [x, len(items) + 1]
    return items


@pytest.mark.parametrize("codec", ["pickle", "json"])
@pytest.mark.parametrize("options", OPTIONS)
def test_base_exceptions_fail_only_their_item_and_the_node_lives(
    codec: str, options: str, start_worker: StartWorker, client: Client
) -> None:
    node = start_worker(processes=1)
    items = _items(list(ESCAPES))
    job = client.map(
        tasks.hostile, items, codec=codec, batch_size=len(items), chunksize=len(items),
        **OPTIONS[options],
    )  # fmt: skip
    assert job.wait(timeout=60), node.log()
    assert node.proc.poll() is None, node.log()
    outcomes = list(job.outcomes())
    assert [o.index for o in outcomes] == list(range(len(items)))
    for outcome, x in zip(outcomes, items, strict=True):
        if x not in ESCAPES:
            assert (outcome.ok, outcome.value) == (True, x * x), outcome
            continue
        type_name, words = ESCAPES[x]
        assert not outcome.ok and outcome.error is not None, (x, outcome)
        assert outcome.error.type == type_name, (x, outcome.error)
        assert words in outcome.error.message, (x, outcome.error)
        assert "in hostile" in outcome.error.traceback, (x, outcome.error)
    # One warning for the chunk, naming job, batch and the first item that escaped.
    first = items.index(tasks.SYS_EXIT)
    line = wait_until(
        lambda: [ln for ln in node.log().splitlines() if "SystemExit" in ln and job.id in ln],
        timeout=10,
        message=node.log,
    )
    assert f"job {job.id} batch 0 item {first}" in line[0], line
    assert len(line) == 1, line


@pytest.mark.parametrize("codec", ["pickle", "json"])
def test_a_result_whose_pickling_exits_fails_only_its_item(
    codec: str, start_worker: StartWorker, client: Client
) -> None:
    node = start_worker(processes=1)
    job = client.map(
        tasks.hostile, [1, tasks.PICKLE_EXITS, 3], codec=codec, batch_size=3, chunksize=3
    )
    assert job.wait(timeout=60), node.log()
    assert node.proc.poll() is None, node.log()
    first, bad, last = job.outcomes()
    assert (first.value, last.value) == (1, 9)
    assert bad.error is not None and bad.error.type == "EncodeError", bad
    assert "PickleExits" in bad.error.message, bad


def test_a_base_exception_in_a_batch_a_second_node_reclaims_fails_only_its_item(
    start_worker: StartWorker, client: Client
) -> None:
    """The batch that killed a node once killed every node that took it after."""
    job = client.map(tasks.hostile, [tasks.SYS_EXIT, 2], batch_size=2)
    nodes = [start_worker(processes=1) for _ in range(2)]
    assert job.wait(timeout=60), "\n".join(n.log() for n in nodes)
    assert all(n.proc.poll() is None for n in nodes), "\n".join(n.log() for n in nodes)
    bad, good = job.outcomes()
    assert bad.error is not None and bad.error.type == "SystemExit"
    assert good.value == 4


@pytest.mark.parametrize("options", OPTIONS)
def test_an_input_whose_pickling_exits_on_the_node_fails_alone(
    options: str, start_worker: StartWorker, client: Client
) -> None:
    """The pool's feeder thread died on it, and the node never ran a chunk again."""
    node = start_worker(processes=1)
    items = [1, tasks.ExitsWhenRepickled(2), 3]
    job = client.map(tasks.identity, items, batch_size=3, chunksize=3, **OPTIONS[options])
    assert job.wait(timeout=30), node.log()
    first, bad, last = job.outcomes()
    assert (first.value, last.value) == (1, 3)
    assert bad.error is not None and bad.error.type == "SystemExit", bad
    assert "could not send the item to its pool" in bad.error.message, bad
    assert bad.attempts == 1
    follow = client.map(tasks.square, [2, 3], batch_size=2)  # the node still runs chunks
    assert list(follow.results(timeout=30)) == [4, 9]


def test_an_input_whose_unpickling_exits_in_the_pool_fails_alone(
    start_worker: StartWorker, client: Client
) -> None:
    node = start_worker(processes=1)
    items = [1, tasks.ExitsWhenUnpickledTwice(2), 3, 4]
    job = client.map(tasks.identity, items, batch_size=4, chunksize=4)
    assert job.wait(timeout=30), node.log()
    outcomes = list(job.outcomes())
    assert [o.value for o in outcomes if o.ok] == [1, 3, 4]
    bad = outcomes[1].error
    assert bad is not None and "could not be unpickled in the pool process" in bad.message, bad
    assert "SystemExit" in bad.message
    assert node.proc.poll() is None


def test_a_payload_whose_unpickling_raises_an_unprintable_error_is_dead_lettered(
    start_worker: StartWorker, client: Client
) -> None:
    """Naming the error in the dead letter's reason printed it: SystemExit."""
    node = start_worker(processes=1)
    job = client.map(tasks.identity, [1, tasks.ExitingStrWhenRead()], batch_size=2)
    assert job.wait(timeout=30), node.log()
    first, second = job.outcomes()
    assert first.error is not None and first.error.type == "BadBatch"
    assert second.error is not None and second.error.type == "BadBatch"
    assert "ExitingStrError <exception str() failed: SystemExit>" in first.error.message
    assert node.proc.poll() is None
