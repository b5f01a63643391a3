"""Fixtures: a real redis-server per session, fakeredis, and both for protocol tests.

``redis_server`` starts a ``taskfan.server.RedisServer`` for the session, unless
``TASKFAN_TEST_REDIS_URL`` names a server of yours: then tests use that one and
**its database is flushed before each test** (FLUSHDB on the URL's database; on
our own server, FLUSHALL).

``redis_cluster`` starts a local Redis Cluster of three primaries for the
session, the first time a test needs it. A test marked ``@pytest.mark.cluster``
runs twice: on the server, then on the cluster (``redis_url`` is then a
``redis+cluster://`` URL, and ``r`` a ``RedisCluster``, emptied before the test).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from producer import Client
from taskfan.connection import connect
from taskfan.server import RedisServer
from tests.cli_support import write_lines
from tests.scale.cluster import LocalCluster
from tests.workers import WorkerProcess


@dataclass(frozen=True)
class TestRedis:
    """The Redis the tests use: its URL, and whether this session started it."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    url: str
    owned: bool
    server: RedisServer | None = None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[TestRedis]:
    url = os.environ.get("TASKFAN_TEST_REDIS_URL")
    if url:
        yield TestRedis(url, owned=False)
        return
    with RedisServer() as server:
        yield TestRedis(server.url, owned=True, server=server)


class VolatileRedis:
    """A redis-server of one test's own that keeps nothing across a restart
    (``--save '' --appendonly no``): ``outage(seconds)`` SIGKILLs it, leaves it
    down that long, and starts it again, empty, on the same port."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    def outage(self, seconds: float) -> None:
        self.server.kill()
        time.sleep(seconds)  # the outage itself, not a synchronisation
        self.server.restart()


@pytest.fixture
def volatile_redis() -> Iterator[VolatileRedis]:
    with RedisServer(appendonly=False) as server:
        yield VolatileRedis(server)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as cluster:
        yield cluster


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``cluster`` that use a Redis run on the server and on the cluster."""
    if metafunc.definition.get_closest_marker("cluster") and "redis_url" in metafunc.fixturenames:
        metafunc.parametrize("redis_kind", ["server", "cluster"], indirect=True)


@pytest.fixture
def redis_kind(request: pytest.FixtureRequest) -> str:
    """ "server" (the session's redis-server), or "cluster" for tests marked so."""
    return str(getattr(request, "param", "server"))


@pytest.fixture
def redis_url(redis_kind: str, request: pytest.FixtureRequest) -> str:
    """The session server's URL (or the cluster's), emptied before the test."""
    if redis_kind == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        return cluster.url
    redis_server: TestRedis = request.getfixturevalue("redis_server")
    with redis.Redis.from_url(redis_server.url) as client:
        if redis_server.owned:
            client.flushall()
        else:
            client.flushdb()
    return redis_server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client: Any = connect(redis_url) if "+cluster" in redis_url else redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    # A server of its own: FakeRedis() instances otherwise share state by address.
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture
def cluster_r(redis_cluster: LocalCluster) -> Iterator[redis.Redis]:
    """A client of the session's cluster, emptied before the test."""
    redis_cluster.flush()
    client: Any = connect(redis_cluster.url)
    yield client
    client.close()


@pytest.fixture(params=["real", "fake", "cluster"])
def any_redis(request: pytest.FixtureRequest) -> redis.Redis:
    """An empty Redis: the real server, fakeredis, then a Redis Cluster (the test
    runs once on each)."""
    name = {"real": "r", "fake": "fake", "cluster": "cluster_r"}[request.param]
    client: redis.Redis = request.getfixturevalue(name)
    return client


class StartWorker:
    """Starts ``taskfan worker`` subprocesses on the test's Redis; closes them after."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.started: list[WorkerProcess] = []

    def __call__(
        self,
        *args: str,
        queue: str | None = "default",
        processes: int = 2,
        env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        worker = WorkerProcess(self.redis_url, *args, queue=queue, processes=processes, env=env)
        self.started.append(worker)
        return worker


@pytest.fixture
def start_worker(redis_url: str) -> Iterator[StartWorker]:
    starter = StartWorker(redis_url)
    yield starter
    for worker in starter.started:
        worker.close()


@pytest.fixture
def client(redis_url: str) -> Client:
    return Client.from_url(redis_url)


@pytest.fixture
def popen() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes the test starts (append them): killed at its end if still running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def slow_input(tmp_path: Path) -> Path:
    """Input for a ``taskfan run`` of tests.tasks:sleep that takes a while
    (``tests.cli_support.start_run``): 200 items of 50 ms."""
    return write_lines(tmp_path / "sleeps.jsonl", ["0.05"] * 200)


@pytest.fixture
def node(redis_url: str) -> Iterator[WorkerProcess]:
    """A worker node on ``redis_url`` (default options), closed after the test."""
    worker = WorkerProcess(redis_url)
    yield worker
    worker.close()
