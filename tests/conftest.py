"""Fixtures: a real redis-server per session, fakeredis, and both for protocol tests.

``redis_server`` starts a ``taskfan.server.RedisServer`` for the session, unless
``TASKFAN_TEST_REDIS_URL`` names a server of yours: then tests use that one and
**its database is flushed before each test** (FLUSHDB on the URL's database; on
our own server, FLUSHALL).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import fakeredis
import pytest
import redis

from producer import Client
from taskfan.server import RedisServer
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


@pytest.fixture
def redis_url(redis_server: TestRedis) -> str:
    """The session server's URL, emptied before the test."""
    with redis.Redis.from_url(redis_server.url) as client:
        if redis_server.owned:
            client.flushall()
        else:
            client.flushdb()
    return redis_server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    # A server of its own: FakeRedis() instances otherwise share state by address.
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


@pytest.fixture(params=["real", "fake"])
def any_redis(request: pytest.FixtureRequest) -> redis.Redis:
    """An empty Redis: the real server, then fakeredis (the test runs once on each)."""
    name = "r" if request.param == "real" else "fake"
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
