"""Threat: a taskfan ACL user does more than its role needs.

``taskfan acl worker`` and ``taskfan acl producer`` (``taskfan.acl``) grant
neither SCRIPT LOAD nor EVAL nor FUNCTION LOAD: with any of them a user runs Lua
of its own (a loop in Lua makes Redis answer BUSY to every client). The roles
call taskfan's scripts by SHA (EVALSHA), which runs only what an admin loaded
(``taskfan acl --load-scripts``). Each role runs against a real redis-server
with an admin password: what it cannot do, and that it does its job end to end.
The long form, over TLS and on a cluster: ``tests/scale/test_tls_acl.py``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from producer import Client
from taskfan import acl, scripts
from taskfan.cli import main
from taskfan.errors import ConfigError
from taskfan.keys import QueueKeys
from taskfan.server import HOST, RedisServer
from tests import tasks
from tests.helpers import wait_until
from tests.workers import WorkerProcess
from worker.services import backlog

PASSWORDS = {"worker": os.urandom(8).hex(), "producer": os.urandom(8).hex()}
BUSY_LOOP = "local i = 0 while true do i = i + 1 end"


class Server:
    def __init__(self, server: RedisServer, admin_password: str) -> None:
        self.server = server
        self.admin_url = f"redis://default:{admin_password}@{HOST}:{server.port}/0"
        self.admin = redis.Redis(HOST, server.port, password=admin_password)

    def url(self, role: str) -> str:
        return f"redis://taskfan-{role}:{PASSWORDS[role]}@{HOST}:{self.server.port}/0"

    def as_role(self, role: str) -> redis.Redis:
        return redis.Redis(HOST, self.server.port, username=f"taskfan-{role}",
                           password=PASSWORDS[role])  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    admin_password = os.urandom(8).hex()
    redis_server = RedisServer(password=admin_password)
    redis_server.start()
    found = Server(redis_server, admin_password)
    for role, password in PASSWORDS.items():
        found.admin.execute_command("ACL", "SETUSER", f"taskfan-{role}", "reset", "on",
                                    f">{password}", *acl.rules(role))  # fmt: skip
    try:
        yield found
    finally:
        found.admin.close()
        redis_server.stop()


@pytest.fixture
def fresh(server: Server) -> Server:
    server.admin.flushall()
    server.admin.script_flush()
    server.admin.acl_log_reset()
    return server


def test_no_role_is_granted_a_way_to_run_lua_of_its_own() -> None:
    for role in acl.ROLES:
        granted = set(acl.rules(role))
        assert not granted & {"+eval", "+eval_ro", "+script|load", "+script", "+function",
                              "+function|load", "+fcall", "+@scripting", "+@all"}  # fmt: skip
        assert "+evalsha" in granted  # taskfan's own scripts, once an admin loaded them


@pytest.mark.parametrize("role", sorted(acl.ROLES))
def test_a_role_cannot_run_its_own_lua_nor_flush(fresh: Server, role: str) -> None:
    client: Any = fresh.as_role(role)
    forbidden = [
        ("EVAL", BUSY_LOOP, "0"),
        ("EVAL_RO", BUSY_LOOP, "0"),
        ("SCRIPT", "LOAD", BUSY_LOOP),
        ("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('x', function() end)"),
        ("FCALL", "x", "0"),
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("SCRIPT", "FLUSH"),
        ("CONFIG", "SET", "lua-time-limit", "100000"),
        ("GET", "app:secret"),
    ]
    for command in forbidden:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    # EVALSHA runs only what is in the server's script cache: the loop was never loaded.
    sha = hashlib.sha1(BUSY_LOOP.encode()).hexdigest()
    with pytest.raises(redis.exceptions.NoScriptError):
        client.execute_command("EVALSHA", sha, "0")
    assert fresh.admin.ping()  # and Redis answers everyone


def test_roles_need_the_admin_to_load_the_scripts_and_say_so(fresh: Server) -> None:
    producer = Client.from_url(fresh.url("producer"))
    job = producer.map(tasks.square, [1, 2])  # born sealed: no script yet
    with pytest.raises(ConfigError, match=r"taskfan acl --load-scripts --redis-url ADMIN_URL"):
        job.cancel()
    with pytest.raises(ConfigError, match="may not load them"):
        scripts.load_all(fresh.as_role("worker"))
    result = CliRunner().invoke(main, ["acl", "--load-scripts", "--redis-url", fresh.admin_url])
    assert result.exit_code == 0, result.output
    scripts.load_all(fresh.as_role("worker"))  # present now: nothing to load
    assert job.cancel() is True
    refused = [e for e in fresh.admin.acl_log() if "setinfo" not in str(e["object"])]
    assert {str(e["object"]) for e in refused} <= {"script|load", "load"}


def test_each_role_does_its_job_end_to_end(fresh: Server) -> None:
    scripts.load_all(fresh.admin)
    fresh.admin.acl_log_reset()
    node = WorkerProcess(fresh.url("worker"), env={"TASKFAN_HEARTBEAT_INTERVAL": "0.5"})
    try:
        client = Client.from_url(fresh.url("producer"))
        job = client.map(tasks.fail_if_multiple_of_7, range(1, 20), batch_size=3)
        assert [o.ok for o in job.outcomes(timeout=60)].count(False) == 2, node.log()
        assert job.retry_failed() == 2 and job.wait(timeout=60)
        assert list(client.map(tasks.square, [3]).results(timeout=60)) == [9]
        refused = [e for e in fresh.admin.acl_log() if "setinfo" not in str(e["object"])]
        assert refused == [], "the ACL refused a command taskfan needs"
    finally:
        node.close()


def test_the_worker_role_ends_abandoned_jobs_and_reads_its_peers(fresh: Server) -> None:
    """A node ends a job whose producer's enqueue lease lapsed (abandon.lua asks
    the server's TIME) and, for a function it cannot import, reads the other
    nodes' records (ZRANGE): its role allows both (issue 14)."""
    scripts.load_all(fresh.admin)
    fresh.admin.acl_log_reset()
    client = Client.from_url(fresh.url("producer"))
    lapsed = client.map(tasks.square, range(3), batch_size=1)
    # As a producer killed mid-enqueue leaves it: unsealed, its lease long past.
    fresh.admin.hset(lapsed.keys.meta, mapping={"sealed": "0", "lease_until": "1.0"})
    node = WorkerProcess(fresh.url("worker"), env={"TASKFAN_HEARTBEAT_INTERVAL": "0.5"})
    try:
        wait_until(lambda: fresh.admin.hget(lapsed.keys.meta, "state") == b"abandoned",
                   timeout=30, message=node.log)  # fmt: skip
        unknown = client.map("tests.no_such_module:fn", [1, 2])
        assert unknown.wait(timeout=60), node.log()
        errors = [o.error for o in unknown.outcomes() if o.error]
        assert len(errors) == 2 and "no live node serving queue default" in errors[0].message
        refused = [e for e in fresh.admin.acl_log() if "setinfo" not in str(e["object"])]
        assert refused == [], "the ACL refused a command taskfan needs"
    finally:
        node.close()


def test_the_worker_role_samples_the_backlog_for_its_metrics(fresh: Server) -> None:
    """A node with --metrics-port reads the queue's jobs and the nodes' records
    at each heartbeat (worker.services.backlog): its role allows it, nothing is refused."""
    scripts.load_all(fresh.admin)
    fresh.admin.acl_log_reset()
    client = Client.from_url(fresh.url("producer"))
    job = client.map(tasks.square, range(12), batch_size=4)
    node = WorkerProcess(fresh.url("worker"), "--metrics-port", "0",
                         env={"TASKFAN_HEARTBEAT_INTERVAL": "0.2"})  # fmt: skip
    try:
        assert job.wait(timeout=60), node.log()

        def sampled() -> bool:  # a heartbeat since the job ended, each with its sample
            records: Any = fresh.admin.keys("taskfan:node:*")
            return bool(records) and fresh.admin.hget(records[0], "held_items") == b"{}"

        wait_until(sampled, timeout=30, message=node.log)
        assert backlog.sample(fresh.as_role("worker"), [QueueKeys("default")]) == {
            "default": (0, 0)
        }
        refused = [e for e in fresh.admin.acl_log() if "setinfo" not in str(e["object"])]
        assert refused == [], "the ACL refused a command taskfan needs"
        assert "heartbeat failed" not in node.log()
    finally:
        node.close()


def test_the_roles_run_executor_futures_cancel_and_start(fresh: Server, tmp_path: Any) -> None:
    """A producer takes a queued call back (cancel_call.lua: XRANGE, XINFO
    GROUPS, XDEL, then record.lua); a worker announces the calls it takes
    (started.lua): neither is refused."""
    from producer import Executor
    from tests.stdlib_futures import calls

    scripts.load_all(fresh.admin)
    fresh.admin.acl_log_reset()
    executor = Executor(fresh.url("producer"))
    node = None
    try:
        queued = executor.submit(tasks.square, 2)  # no node yet: sent when submit returns
        assert fresh.admin.xlen(QueueKeys("default").stream) == 1
        assert queued.cancel()
        node = WorkerProcess(fresh.url("worker"))
        event = calls.FileEvent(str(tmp_path / "go"))
        taken = executor.submit(calls.wait_for, event)
        wait_until(taken.running, 60, message="the call never turned running")
        assert not taken.cancel()
        event.set()
        assert taken.result(timeout=60) is True
    finally:
        executor.shutdown(wait=False)  # a failure above must not wait for a node
        if node is not None:
            node.close()
    refused = [e for e in fresh.admin.acl_log() if "setinfo" not in str(e["object"])]
    assert refused == [], "the ACL refused a command taskfan needs"
