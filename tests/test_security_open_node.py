"""Threat: an open node nobody noticed (docs/security.md).

A node without a secret that accepts pickle runs whatever anyone who can write
to its Redis sends. Such a node says so at start (a WARNING naming the risk
and the fix), and every view of the cluster shows each node's posture:
``taskfan nodes``, ``status --json`` and the dashboard. And a producer given
the same environment as its nodes signs as they expect: the Python API reads
``TASKFAN_SECRET`` / ``TASKFAN_SECRET_FILE`` when no ``secret=`` is passed (it
did not, and every batch was refused as unsigned).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client, Executor
from producer.ops.dashboard import Dashboard
from taskfan.errors import ConfigError
from taskfan.signing import Keyring
from tests import tasks
from tests.cli_support import clean_env, invoke
from tests.conftest import StartWorker
from tests.helpers import wait_until
from tests.workers import WorkerProcess
from worker.core.entry_checks import Guard

pytestmark = pytest.mark.usefixtures("clean_env")
__all__ = ["clean_env"]

SECRET = "open-node-secret-0123456789abcdef"
BEAT = {"TASKFAN_HEARTBEAT_INTERVAL": "0.2", "TASKFAN_VISIBILITY_TIMEOUT": "2"}
OPEN = "this node is open: it runs unsigned pickle batches"


def nodes_by_name(redis_url: str) -> dict[str, dict[str, Any]]:
    result = invoke("nodes", "--json", "--redis-url", redis_url)
    assert result.exit_code == 0, result.output
    return {node["id"]: node for node in json.loads(result.stdout)}


def started(node: WorkerProcess) -> bool:
    return "serving" in node.log()


def test_an_open_node_warns_at_start_and_a_closed_one_does_not(
    start_worker: StartWorker,
) -> None:
    open_node = start_worker("--name", "open-one", processes=1)
    signed = start_worker("--name", "signed-one", env={"TASKFAN_SECRET": SECRET}, processes=1)
    no_pickle = start_worker("--name", "json-one", "--no-pickle", processes=1)
    for node in (open_node, signed, no_pickle):
        wait_until(functools.partial(started, node), timeout=30, message=node.log)
    assert "WARNING" in open_node.log() and OPEN in open_node.log()
    assert "--secret-file" in open_node.log() and "--no-pickle" in open_node.log()
    assert OPEN not in signed.log() and OPEN not in no_pickle.log()


def test_the_warning_spares_only_a_unix_socket() -> None:
    assert Guard().warnings("unix:///run/taskfan/redis.sock") == []
    assert OPEN in Guard().warnings("redis://127.0.0.1:6400/0")[0]
    assert Guard(no_pickle=True).warnings("redis://10.0.0.5/0") == []
    assert Guard(keyring=Keyring.of(SECRET)).warnings("redis://10.0.0.5/0") == []


def test_every_view_shows_each_node_s_posture(
    start_worker: StartWorker, redis_url: str, r: redis.Redis
) -> None:
    start_worker("--name", "open-two", env=BEAT, processes=1)
    start_worker("--name", "shut-two", "--no-pickle", "--allow", "tests.tasks",
                 env={**BEAT, "TASKFAN_SECRET": SECRET}, processes=1)  # fmt: skip

    def both() -> dict[str, dict[str, Any]] | None:
        found = nodes_by_name(redis_url)
        return found if len(found) == 2 else None

    found = wait_until(both, timeout=30, message="both nodes' records")
    assert found is not None
    shut, open_ = found["shut-two"], found["open-two"]
    key_id = Keyring.of(SECRET).key_ids[0]  # type: ignore[union-attr]
    assert (shut["signed"], shut["pickle"], shut["allow"], shut["open"]) == (
        key_id, "refused", ["tests.tasks"], False,
    )  # fmt: skip
    assert shut["accepts"] == f"signed {key_id}, no pickle, allow tests.tasks"
    assert (open_["signed"], open_["pickle"], open_["allow"], open_["open"]) == (
        None, "accepted", [], True,
    )  # fmt: skip
    assert open_["accepts"] == "OPEN (unsigned, pickle), any function"
    table = invoke("nodes", "--redis-url", redis_url).stdout
    assert "OPEN (unsigned, pickle)" in table and f"signed {key_id}, no pickle" in table
    status = json.loads(invoke("status", "--json", "--redis-url", redis_url).stdout)
    assert {n["id"]: n["open"] for n in status["nodes"]} == {"open-two": True, "shut-two": False}
    dashboard = json.loads(Dashboard(r, min_interval=0.0).overview())
    assert {n["id"]: n["accepts"] for n in dashboard["nodes"]}["open-two"].startswith("OPEN")


def test_the_python_api_reads_the_secret_from_the_environment_as_nodes_do(
    redis_url: str, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TASKFAN_SECRET", SECRET)  # read at call time, not import time
    start_worker(processes=1)  # the same environment: a node that runs signed batches only
    client = Client.from_url(redis_url)
    assert client.keyring is not None and client.keyring.key_ids == Keyring.of(SECRET).key_ids  # type: ignore[union-attr]
    assert list(client.map(tasks.square, [1, 2, 3]).results(timeout=60)) == [1, 4, 9]
    with Executor(redis_url) as executor:
        assert executor.submit(tasks.add, 2, 3).result(timeout=60) == 5
    assert Client(client.redis).keyring is not None
    assert Client(client.redis, secret=()).keyring is None  # asked for no secret
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    monkeypatch.delenv("TASKFAN_SECRET")
    monkeypatch.setenv("TASKFAN_SECRET_FILE", str(path))
    assert list(Client.from_url(redis_url).map(tasks.square, [4]).results(timeout=60)) == [16]
    monkeypatch.setenv("TASKFAN_SECRET", SECRET)
    with pytest.raises(ConfigError, match="not both"):
        Client.from_url(redis_url)
    monkeypatch.delenv("TASKFAN_SECRET_FILE")
    monkeypatch.setenv("TASKFAN_SECRET", "short")
    with pytest.raises(ConfigError, match=r"TASKFAN_SECRET=\*\*\*"):
        Client.from_url(redis_url)
