"""TLS and ACLs: nodes and producers as least-privilege users, over TLS where it exists.

The server has an admin password (the default user) and two users made from
``taskfan.acl``: a worker and a producer. Every test runs on plain TCP, then on
TLS with a throwaway CA that must sign both sides (``tls-auth-clients yes``),
when the local redis-server was built with TLS.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from producer import Client
from producer.ops.admin import purge
from producer.ops.deadletters import Requeued, requeue_all
from producer.ops.overview import gather
from producer.rejects import Rejected
from taskfan import acl, scripts
from taskfan.cli import main
from taskfan.connection import check, connect
from taskfan.errors import BrokerUnavailable, JobCancelled
from taskfan.keys import GROUP, QueueKeys
from taskfan.server import HOST, RedisServer
from tests import tasks
from tests.helpers import wait_until
from tests.scale.cluster import LocalCluster
from tests.scale.tls import Certificates, make_certificates
from tests.workers import REPO, WorkerProcess

ENV = {"TASKFAN_VISIBILITY_TIMEOUT": "2", "TASKFAN_HEARTBEAT_INTERVAL": "0.5",
       "TASKFAN_MAX_DELIVERIES": "2"}  # fmt: skip
PASSWORDS = {"worker": os.urandom(8).hex(), "producer": os.urandom(8).hex()}


@dataclass(frozen=True)
class Secured:
    server: RedisServer
    admin: redis.Redis
    tls: Certificates | None
    port: int  #: the port clients use (the TLS port when TLS is on)

    def url(self, role: str, *, password: str | None = None, **options: str) -> str:
        user = f"taskfan-{role}"
        secret = PASSWORDS[role] if password is None else password
        scheme = "rediss" if self.tls else "redis"
        query = dict(options)
        if self.tls and not options:
            query = {"ssl_ca_certs": str(self.tls.ca), "ssl_certfile": str(self.tls.client_cert),
                     "ssl_keyfile": str(self.tls.client_key)}  # fmt: skip
        text = "&".join(f"{k}={v}" for k, v in query.items())
        return f"{scheme}://{user}:{secret}@{HOST}:{self.port}/0" + (f"?{text}" if text else "")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module", params=["plain", "tls"])
def secured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Secured]:  # fmt: skip
    admin_password = os.urandom(8).hex()
    certs, port = None, 0
    extra: tuple[str, ...] = ()
    if request.param == "tls":
        certs = make_certificates(tmp_path_factory.mktemp("tls"))
        port = _free_port()
        extra = ("--tls-port", str(port), "--tls-cert-file", str(certs.server_cert),
                 "--tls-key-file", str(certs.server_key), "--tls-ca-cert-file", str(certs.ca),
                 "--tls-auth-clients", "yes")  # fmt: skip
    server = RedisServer(password=admin_password, extra_args=extra)
    try:
        server.start()
    except BrokerUnavailable as exc:
        if certs is not None and "tls" in str(exc).lower():
            pytest.skip(f"TLS: this redis-server cannot serve TLS: {str(exc)[-300:]}")
        raise
    admin = redis.Redis(HOST, server.port, password=admin_password)
    for role, password in PASSWORDS.items():
        admin.execute_command("ACL", "SETUSER", f"taskfan-{role}", "reset", "on",
                              f">{password}", *acl.rules(role))  # fmt: skip
    scripts.load_all(admin)  # the admin step: roles may not load scripts
    try:
        yield Secured(server, admin, certs, port or server.port)
    finally:
        admin.close()
        server.stop()


@pytest.fixture
def fresh(secured: Secured) -> Secured:
    secured.admin.flushall()
    secured.admin.acl_log_reset()
    return secured


def denials(server: redis.Redis) -> list[dict[str, Any]]:
    """What the ACL refused our users (redis-py's CLIENT SETINFO aside: see taskfan.acl)."""
    return [
        entry for entry in server.acl_log()
        if "taskfan-" in str(entry["username"]) and "setinfo" not in str(entry["object"])
    ]  # fmt: skip


def test_nodes_and_producers_work_as_least_privilege_users(fresh: Secured) -> None:
    worker_url, producer_url = fresh.url("worker"), fresh.url("producer")
    client = Client.from_url(producer_url)
    # A batch two ghost consumers took and lost: the node dead-letters it.
    queue = QueueKeys("default")
    fresh.admin.xgroup_create(queue.stream, GROUP, id="0", mkstream=True)
    doomed = client.map(tasks.square, [1, 2], batch_size=2)
    read: Any = fresh.admin.xreadgroup(GROUP, "ghost-1", {queue.stream: ">"})
    fresh.admin.xclaim(queue.stream, GROUP, "ghost-2", 0, [read[0][1][0][0]])

    node = WorkerProcess(worker_url, "--name", "secured", env=ENV)
    try:
        # Results in order, failures, rejected inputs (recorded by the producer).
        items: list[Any] = [1, 2, Rejected("bad line"), *range(3, 15)]
        job = client.map(tasks.fail_if_multiple_of_7, items, batch_size=4)
        outcomes = list(job.outcomes(timeout=60))
        assert [o.ok for o in outcomes].count(False) == 3, node.log()  # 7, 14 and the rejected
        assert sorted(o.index for o in job.as_completed(timeout=60)) == list(range(len(items)))
        assert doomed.wait(timeout=60), node.log()
        assert [o.error.type for o in doomed.outcomes() if o.error] == ["DeliveryLimit"] * 2
        (requeued,) = requeue_all(client.redis, "default")  # the dead letter runs again
        assert isinstance(requeued, Requeued), requeued
        assert doomed.wait(timeout=60) and list(doomed.results()) == [1, 4]
        # Retry, cancel, status, purge.
        assert job.retry_failed() == 2 and job.wait(timeout=60)
        slow = client.map(tasks.sleep, [0.2] * 40, batch_size=1)
        wait_until(lambda: slow.progress().done >= 1, timeout=60, message="the slow job started")
        assert slow.cancel()
        with pytest.raises(JobCancelled):
            slow.wait(timeout=10)
        status = gather(client.redis, 20)
        assert [n["id"] for n in status["nodes"]] == ["secured"]
        assert {j["id"] for j in status["jobs"]} == {job.id, doomed.id, slow.id}
        assert purge(client.redis, "default").queue == "default"
        wait_until(lambda: "creating it again" in node.log(), timeout=30,
                   message="the node noticed the purge")  # fmt: skip
        assert list(client.map(tasks.square, [5]).results(timeout=60)) == [25]
        node.signal(signal.SIGTERM)
        assert node.wait(timeout=60) == 0, node.log()
        assert "NOPERM" not in node.log(), node.log()
        assert denials(fresh.admin) == [], "the ACL refused a command taskfan needs"
    finally:
        node.close()


FORBIDDEN_TO_PRODUCERS = [
    ("XREADGROUP", "GROUP", GROUP, "thief", "STREAMS", "taskfan:{q:default}:stream", ">"),
    ("XACK", "taskfan:{q:default}:stream", GROUP, "1-0"),
    ("XCLAIM", "taskfan:{q:default}:stream", GROUP, "thief", "0", "1-0"),
    ("XAUTOCLAIM", "taskfan:{q:default}:stream", GROUP, "thief", "0", "0-0"),
    ("XGROUP", "DESTROY", "taskfan:{q:default}:stream", GROUP),
    ("CLIENT", "UNBLOCK", "1"),
    ("CLIENT", "KILL", "TYPE", "normal"),
    ("EVAL", "return 1", "0"),
    ("SCRIPT", "LOAD", "while true do end"),
    ("SCRIPT", "FLUSH"),
    ("FLUSHALL",),
    ("CONFIG", "GET", "requirepass"),
    ("KEYS", "*"),
    ("GET", "secrets"),
    ("HSET", "app:users", "admin", "1"),
]
FORBIDDEN_TO_WORKERS = [
    ("FLUSHALL",),
    ("CONFIG", "SET", "maxmemory", "1"),
    ("SHUTDOWN",),
    ("GET", "secrets"),
    ("EVAL", "return 1", "0"),
    ("SCRIPT", "LOAD", "while true do end"),
    ("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('x', function() end)"),
    ("ACL", "SETUSER", "taskfan-worker", "+@all"),
]


@pytest.mark.parametrize(("role", "command"), [
    *(("producer", c) for c in FORBIDDEN_TO_PRODUCERS),
    *(("worker", c) for c in FORBIDDEN_TO_WORKERS),
])  # fmt: skip
def test_each_role_is_refused_what_it_does_not_need(
    fresh: Secured, role: str, command: tuple[str, ...]
) -> None:
    client: Any = connect(fresh.url(role))
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    finally:
        client.close()


def test_wrong_credentials_and_certificates_are_refused(fresh: Secured) -> None:
    url = fresh.url("producer", password="wrong")
    with pytest.raises(BrokerUnavailable, match="refused the credentials"):
        check(connect(url), url)
    if fresh.tls is None:
        return
    for options in (
        {"ssl_ca_certs": str(fresh.tls.ca)},  # no client certificate
        {"ssl_ca_certs": str(fresh.tls.other_ca), "ssl_certfile": str(fresh.tls.client_cert),
         "ssl_keyfile": str(fresh.tls.client_key)},  # the server's is signed by another CA
    ):  # fmt: skip
        url = fresh.url("producer", **options)
        with pytest.raises(BrokerUnavailable, match=r"rediss://taskfan-producer:\*\*\*@"):
            check(connect(url), url)


def test_taskfan_acl_prints_the_rules(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["acl", "producer", "--user", "enqueuers"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == acl.setuser("producer", "enqueuers")
    assert "+xreadgroup" not in result.output and "~taskfan:*" in result.output
    worker = CliRunner().invoke(main, ["acl", "worker"]).output
    assert worker.startswith("ACL SETUSER taskfan-worker reset on >PASSWORD resetkeys ~taskfan:*")


def test_least_privilege_users_on_a_cluster(redis_cluster: LocalCluster) -> None:
    """A cluster client needs a few more commands (the slot map, key positions)."""
    redis_cluster.flush()
    with redis_cluster.nodes() as nodes:
        for server in nodes:  # ACLs are per node
            server.acl_log_reset()
            for role, password in PASSWORDS.items():
                server.execute_command("ACL", "SETUSER", f"taskfan-{role}", "reset", "on",
                                     f">{password}", *acl.rules(role))  # fmt: skip
    scripts.load_all(connect(redis_cluster.url))  # the admin step, on every primary
    host_port = redis_cluster.url.split("://", 1)[1]
    worker_url = f"redis+cluster://taskfan-worker:{PASSWORDS['worker']}@{host_port}"
    producer_url = f"redis+cluster://taskfan-producer:{PASSWORDS['producer']}@{host_port}"
    node = WorkerProcess(worker_url, env=ENV)
    try:
        client = Client.from_url(producer_url)
        job = client.map(tasks.fail_if_multiple_of_7, range(1, 50), batch_size=5)
        assert [o.ok for o in job.outcomes(timeout=60)].count(False) == 7, node.log()
        assert job.cancel() is False  # already finished
        assert gather(client.redis, 20)["jobs"][0]["id"] == job.id
        node.signal(signal.SIGTERM)
        assert node.wait(timeout=60) == 0, node.log()
        assert "NOPERM" not in node.log(), node.log()
        with redis_cluster.nodes() as nodes:
            refused = [entry for n in nodes for entry in denials(n)]
        assert refused == [], "the ACL refused a command taskfan needs on a cluster"
    finally:
        node.close()
        with redis_cluster.nodes() as nodes:
            for n in nodes:
                for role in PASSWORDS:
                    n.acl_deluser(f"taskfan-{role}")


def test_the_documented_rules_are_the_code_s() -> None:
    doc = (REPO / "docs" / "scaling.md").read_text()
    for role in acl.ROLES:
        assert acl.setuser(role, f"taskfan-{role}") in doc, f"docs/scaling.md: {role} rules"
