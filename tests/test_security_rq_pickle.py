"""Threat: RQ's pickle through a node that refuses pickle (docs/security.md).

RQ jobs carry no signature, and the data of a job enqueued with RQ's default
serializer is a pickle: loading it runs code. A node with a secret or
``--no-pickle`` resolves ``--rq-serializer`` and judges what it is, not what it
is called: RQ's JSONSerializer passes, anything that unpickles is refused
whatever its name (``rq.serializers.PickleSerializer``, an alias, an empty
name), and any other serializer only when the operator marks it
(``--rq-serializer-trusted``).
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.serializers import DefaultSerializer

from taskfan.errors import ConfigError
from taskfan.settings import Settings
from tests import rq_tasks
from tests.workers import WorkerProcess
from worker.sources.rq import adapter as rqa


class Touch:
    """Unpickling this creates the file ``path``: the mark of code run by a pickle."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.open, (self.path, "w"))


@pytest.mark.parametrize(
    "name",
    ["pickle", "rq.serializers.PickleSerializer", "rq.serializers.DefaultSerializer",
     "tests.rq_tasks.Renamed", None],
)  # fmt: skip
def test_serializers_that_unpickle_are_refused_whatever_their_name(name: str | None) -> None:
    for signed, no_pickle in ((True, False), (False, True)):
        with pytest.raises(ConfigError, match="RQ's pickle serializer"):
            rqa.check_trust(name, signed=signed, no_pickle=no_pickle)
        with pytest.raises(ConfigError, match="RQ's pickle serializer"):  # marking cannot help
            rqa.check_trust(name, signed=signed, no_pickle=no_pickle, trusted=True)
    rqa.check_trust(name, signed=False, no_pickle=False)  # an open node drains them, as RQ does


def test_json_passes_and_other_serializers_need_the_operators_word() -> None:
    rqa.check_trust("json", signed=True, no_pickle=True)
    rqa.check_trust("rq.serializers.JSONSerializer", signed=False, no_pickle=True)
    with pytest.raises(ConfigError, match="--rq-serializer-trusted"):
        rqa.check_trust("tests.rq_tasks.PlainJson", signed=False, no_pickle=True)
    rqa.check_trust("tests.rq_tasks.PlainJson", signed=False, no_pickle=True, trusted=True)
    assert rqa.unpickles(DefaultSerializer) and rqa.unpickles(rq_tasks.Renamed)
    assert not rqa.unpickles(rq_tasks.PlainJson)


def test_an_empty_serializer_name_is_an_error() -> None:
    for name in ("", " "):
        with pytest.raises(ConfigError, match="empty"):
            rqa.check_trust(name, signed=False, no_pickle=True)
        with pytest.raises(ConfigError, match="rq_serializer is empty"):
            Settings(rq_queues=("q",), queues=(), rq_serializer=name)
    env = {"TASKFAN_RQ_SERIALIZER_TRUSTED": "1"}
    assert Settings.from_env(env, rq_queues=("q",)).rq_serializer_trusted


@pytest.mark.parametrize("name", ["rq.serializers.PickleSerializer", "", "tests.rq_tasks.Renamed"])
def test_a_no_pickle_node_never_loads_an_rq_pickle(
    r: redis.Redis, redis_url: str, tmp_path: Path, name: str
) -> None:
    marker = tmp_path / "pickle-ran"
    Queue("q", connection=r).enqueue(rq_tasks.echo, Touch(marker))
    node = WorkerProcess(
        redis_url, "--rq-queue", "q", "--rq-serializer", name, "--no-pickle", "--burst",
        queue=None,
    )  # fmt: skip
    try:
        assert node.wait(timeout=60) == 2, node.log()
        assert "Error:" in node.log() and "Traceback" not in node.log()
        assert not marker.exists()
        assert Queue("q", connection=r).count == 1  # left for a node that may run it
    finally:
        node.close()
        Queue("q", connection=r).empty()


def test_a_marked_serializer_is_drained(r: redis.Redis, redis_url: str) -> None:
    queue = Queue("plain", connection=r, serializer=rq_tasks.PlainJson)
    job = queue.enqueue(rq_tasks.double, 21)
    node = WorkerProcess(
        redis_url, "--rq-queue", "plain", "--rq-serializer", "tests.rq_tasks.PlainJson",
        "--rq-serializer-trusted", "--no-pickle", "--burst", queue=None,
    )  # fmt: skip
    try:
        assert node.wait(timeout=60) == 0, node.log()
        job.refresh()
        assert job.return_value() == 42
    finally:
        node.close()
