"""A streaming map's enqueuer thread and Redis outages: it rides out a transient
one (``taskfan/transient.py``: the one list and the one backoff), and when it
gives up (the outage outlasts the enqueue lease, past which the job would be
abandoned anyway) its reader raises that error at once and cancels the job,
instead of learning of it only once the lease lapsed (``JobAbandoned``).

The outage is injected into the commands the enqueuer thread sends (by thread
name): the reader, the lease keeper and the node go on reaching Redis."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from producer import Client
from producer.stream import StreamJob
from taskfan.errors import BrokerUnavailable
from taskfan.keys import JobKeys
from tests import tasks
from tests.helpers import wait_until
from tests.workers import WorkerProcess


class Outage:
    """Commands sent from a streaming map's enqueuer thread fail while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.failures = 0

    def client(self, url: str) -> redis.Redis:
        outage = self

        class Cut(redis.Connection):
            def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                if outage.on and threading.current_thread().name.startswith("taskfan-stream-"):
                    outage.failures += 1
                    raise redis.ConnectionError("injected outage")
                super().send_packed_command(command, check_health)

        kwargs = {
            **redis.ConnectionPool.from_url(url).connection_kwargs,
            "retry": Retry(NoBackoff(), 0),
            "socket_timeout": 10.0,  # longer than a blocking read's slice
        }
        pool = redis.ConnectionPool(connection_class=Cut, **kwargs)
        return redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))


def _items(outage: Outage, start_at: int, count: int) -> Any:
    for i in range(count):
        if i == start_at:
            outage.on = True  # Redis goes away for the enqueuer from this batch on
        yield i


def test_the_enqueuer_rides_out_a_transient_outage(redis_url: str, node: WorkerProcess) -> None:
    outage = Outage()
    client = Client(outage.client(redis_url))
    job = client.map(tasks.square, _items(outage, 3, 8), stream=True, batch_size=1, window=2)
    assert isinstance(job, StreamJob)
    results = job.results(timeout=120)
    assert [next(results) for _ in range(3)] == [0, 1, 4]
    wait_until(lambda: outage.failures >= 3, timeout=30)  # it keeps trying...
    outage.on = False  # ... and Redis comes back
    assert list(results) == [9, 16, 25, 36, 49]
    assert job.status == "finished"


def test_a_reader_learns_at_once_that_the_enqueuer_gave_up(
    redis_url: str, node: WorkerProcess, r: redis.Redis
) -> None:
    outage = Outage()
    # The enqueuer gives up once the outage outlasts its lease (2 s here).
    client = Client(outage.client(redis_url), enqueue_lease=2)
    job = client.map(tasks.square, _items(outage, 2, 8), stream=True, batch_size=1, window=2)
    results = job.results(timeout=120)
    assert [next(results) for _ in range(2)] == [0, 1]
    with pytest.raises(BrokerUnavailable, match=f"job {job.id}"):
        next(results)
    # The reader cancelled it (its own connection works): not left to be abandoned.
    assert r.hget(JobKeys(job.id).meta, "state") == b"cancelled"
