"""A node's start-up objects are frozen out of its garbage collector (``gc.freeze``).

A node or pool process imports tens of thousands of objects at start that live
as long as it does. Without a freeze, the first burst of allocations (a large
batch decoded: 25,000 items) starts the process's first full collection, which
walks all of them: about 10 ms, paid by the first large job of every node and
of every pool process (docs/performance.md, "The first (c) on a fresh node").
A node run in someone else's process gives their objects back to the collector
when it stops.
"""

from __future__ import annotations

import gc
import multiprocessing

import pytest

from taskfan.settings import Settings
from tests.helpers import wait_until
from tests.tasks import frozen_objects
from tests.test_node_inprocess import FakeQueue, delivery, drive
from worker.node.node import Node
from worker.pool.process_pool import Pool


@pytest.mark.parametrize("method", multiprocessing.get_all_start_methods())
def test_a_pool_process_freezes_its_start_up_objects(method: str) -> None:
    pool = Pool(1, method, [])
    try:
        frozen = pool.submit(frozen_objects, 0).result(timeout=60)
    finally:
        pool.shutdown(wait=True)
    assert frozen > 1000  # the modules a pool process imports; 0 when not frozen


def test_a_node_freezes_while_it_runs_and_unfreezes_when_it_stops() -> None:
    assert gc.get_freeze_count() == 0  # what the test relies on
    fake = FakeQueue([delivery(0, [0.0])])
    node = Node(Settings(processes=1, heartbeat_interval=0.2, block_seconds=0.2), node_redis=fake)
    seen: list[int] = []

    def watch() -> None:
        wait_until(lambda: fake.written, timeout=60, message="the batch recorded")
        seen.append(gc.get_freeze_count())
        node.stop()

    assert drive(node, watch) == 0
    assert seen and seen[0] > 1000  # this test process's objects, frozen while it ran
    # This process's objects are collectable again: an embedding program's cycles
    # are not kept for good by a node it ran once.
    assert gc.get_freeze_count() == 0
