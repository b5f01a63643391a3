"""Sentinel: a failover in the middle of a job, and nothing lost."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from producer import Client
from taskfan.connection import check, connect
from taskfan.errors import BrokerUnavailable
from taskfan.outcomes import Outcome
from tests import tasks
from tests.chaos.census import census
from tests.helpers import wait_until
from tests.scale.sentinel import SERVICE, LocalSentinel
from tests.workers import WorkerProcess

#: about 20 s of work for two single-process nodes: the failover, with the old
#: master's demotion some 8 s after the promotion, ends well before the job does
ITEMS = 40_000
ENV = {"TASKFAN_VISIBILITY_TIMEOUT": "2", "TASKFAN_HEARTBEAT_INTERVAL": "0.5"}


@pytest.fixture(scope="module")
def sentinel() -> Iterator[LocalSentinel]:
    with LocalSentinel() as local:
        yield local


def test_a_failover_mid_job_loses_nothing(sentinel: LocalSentinel) -> None:
    r: Any = connect(sentinel.url)
    old_master = sentinel.master_port()
    nodes = [WorkerProcess(sentinel.url, processes=1, env=ENV) for _ in range(2)]
    streamed: list[Outcome] = []
    try:
        job = Client.from_url(sentinel.url).map(tasks.nap_square, range(ITEMS), batch_size=100)
        # What the producer enqueued has reached the replica: the test is about
        # nodes and readers riding out the failover, not about writes Redis loses.
        assert r.wait(1, 10_000) == 1
        # A producer streams outcomes as batches complete, across the failover.
        reader = threading.Thread(
            target=lambda: streamed.extend(job.as_completed(timeout=180)), daemon=True
        )
        reader.start()
        wait_until(lambda: job.progress().done >= 1000, timeout=60,
                   message=lambda: "the job under way:\n" + nodes[0].log())  # fmt: skip
        sentinel.failover()
        done_at_failover = job.progress().done
        assert sentinel.master_port() != old_master
        assert done_at_failover < ITEMS, "the job ended before the failover"
        assert job.wait(timeout=180), "\n".join(n.log() for n in nodes)
        reader.join(timeout=60)
        assert not reader.is_alive()
        assert sorted(o.index for o in streamed) == list(range(ITEMS))
        assert all(o.value == o.index * o.index for o in streamed)
        found = census(r, job.id, expected=lambda i: i * i)
        assert (found.lost, found.duplicated, found.wrong, found.failed) == (0, 0, 0, {})
        assert (found.meta.ok, found.meta.batches_done) == (ITEMS, found.meta.batches)
        for node in nodes:
            assert node.proc.poll() is None, node.log()
            assert node.stop() == 0, node.log()
        # The demoted master dropped their connections; they found the new one.
        assert all("reading from Redis failed" in n.log() for n in nodes)
    finally:
        for node in nodes:
            node.close()
        r.close()


def test_an_unknown_service_is_named(sentinel: LocalSentinel) -> None:
    url = sentinel.url.replace(SERVICE, "no-such-service")
    with pytest.raises(BrokerUnavailable, match="no-such-service"):
        check(connect(url), url)
