"""Pipelines whose order holds on a Redis Cluster too.

On one server a pipeline's commands run in the order they were queued: they
share one connection. A cluster pipeline sends each node its commands at once
and retries redirected ones afterwards, so commands bound for different nodes
(different hash slots) run in no particular order. Where order matters (the
job's meta hash before the queue entries that name the job; a batch's results
before its acknowledgement), ``Sequenced.barrier`` sends what was queued so far
before anything queued after it: a no-op on one server, one more round trip on
a cluster.
"""

from __future__ import annotations

from typing import Any

from taskfan.connection import RedisClient, RedisPipeline, is_cluster


class Sequenced:
    """A non-transactional pipeline in phases; use ``pipe`` anew after each barrier."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self.cluster = is_cluster(client)
        self.pipe: RedisPipeline = client.pipeline(transaction=False)
        #: replies of the phases sent so far (errors as exception objects)
        self.results: list[Any] = []

    def barrier(self, raise_on_error: bool = False) -> None:
        """What was queued before runs before anything queued after (cluster only).

        With ``raise_on_error``, the first error of the phase is raised at once,
        so nothing queued after the barrier is sent."""
        if self.cluster and len(self.pipe):
            self.results += self.pipe.execute(raise_on_error=False)
            self.pipe = self.client.pipeline(transaction=False)
            if raise_on_error:
                self._raise_first(self.results)

    @staticmethod
    def _raise_first(results: list[Any]) -> None:
        for result in results:
            if isinstance(result, Exception):
                raise result

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send the last phase; the replies of every phase, in queueing order."""
        results = self.results + (self.pipe.execute(raise_on_error=False) if len(self.pipe) else [])
        self.results = []
        if raise_on_error:
            self._raise_first(results)
        return results
