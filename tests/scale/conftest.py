"""Fixtures of the scale tests: worker nodes on the session's Redis Cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import StartWorker
from tests.scale.cluster import LocalCluster


@pytest.fixture
def start_worker_on_cluster(redis_cluster: LocalCluster) -> Iterator[StartWorker]:
    """Starts ``taskfan worker`` processes on the cluster (emptied by ``cluster_r``)."""
    starter = StartWorker(redis_cluster.url)
    yield starter
    for worker in starter.started:
        worker.close()
