"""Dask distributed: a ``LocalCluster`` of 2 single-thread worker processes.

Two variants: ``client.map`` over chunks (one future per chunk) and per item
(one future per item, as Dask's own examples do).
"""

from __future__ import annotations

from typing import Any

from benchmarks.peers import chunks, run_chunk

VARIANTS = {
    "chunks": "Dask, client.map over chunks, 2 workers x 1 thread",
    "items": "Dask, client.map per item, 2 workers x 1 thread",
}


class DaskPeer:
    def __init__(self, redis_url: str) -> None:
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        self.client = Client(self.cluster)

    def warm(self, items: list[Any]) -> None:
        self.run("chunks", items, 1)
        self.run("items", items, 1)

    def run(self, variant: str, items: list[Any], chunksize: int) -> list[Any]:
        from benchmarks.tasks import task

        if variant == "items":
            return list(self.client.gather(self.client.map(task, items, pure=False)))
        assert variant == "chunks"
        futures = self.client.map(run_chunk, chunks(items, chunksize), pure=False)
        return [value for part in self.client.gather(futures) for value in part]

    def close(self) -> None:
        self.client.close()
        self.cluster.close()
