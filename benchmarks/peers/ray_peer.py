"""Ray: ``ray.util.multiprocessing.Pool(2).map`` with a chunksize, and remote tasks
over chunks, on a local Ray of 2 CPUs (no dashboard).

The pool's 2 actors take no CPU of Ray's accounting (``num_cpus=0``): with 1
each they would hold both CPUs for their lifetime and the remote tasks could
never be scheduled; they are idle while the tasks run.
"""

from __future__ import annotations

from typing import Any

from benchmarks.peers import chunks, run_chunk

VARIANTS = {
    "pool": "Ray, util.multiprocessing.Pool(2).map",
    "tasks": "Ray, remote tasks over chunks",
}


class RayPeer:
    def __init__(self, redis_url: str) -> None:
        import ray
        from ray.util.multiprocessing import Pool

        self.ray = ray
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=200 * 1024 * 1024,
        )
        self.pool = Pool(2, ray_remote_args={"num_cpus": 0})
        self.remote_chunk = ray.remote(num_cpus=1)(run_chunk)

    def warm(self, items: list[Any]) -> None:
        self.run("pool", items, 1)
        self.run("tasks", items, 1)

    def run(self, variant: str, items: list[Any], chunksize: int) -> list[Any]:
        from benchmarks.tasks import task

        if variant == "pool":
            return list(self.pool.map(task, items, chunksize=chunksize))
        assert variant == "tasks"
        refs = [self.remote_chunk.remote(chunk) for chunk in chunks(items, chunksize)]
        return [value for part in self.ray.get(refs) for value in part]

    def close(self) -> None:
        try:
            self.pool.terminate()
        finally:
            self.ray.shutdown()
