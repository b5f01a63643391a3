"""Queue-level operations for operators: purge a queue."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from taskfan import scripts
from taskfan.connection import RedisClient, translate_errors
from taskfan.keys import JobKeys, QueueKeys


@dataclass(frozen=True)
class Purged:
    queue: str
    entries: int  #: batches that were waiting or in flight
    jobs_cancelled: int  #: active jobs of the queue, now cancelled


def purge(client: RedisClient, queue: str) -> Purged:
    """Drop every batch of ``queue`` and cancel its active jobs.

    Jobs are cancelled first, so nodes holding one of their batches drop its
    results instead of recording them; then the stream goes (with its consumer
    group, which nodes create again). Finished jobs and their results stay.
    """
    keys = QueueKeys(queue)
    with translate_errors(f"purging queue {queue}"):
        job_ids: Any = client.zrange(keys.jobs, 0, -1)
        scripts.load_all(client)  # the pipeline calls the cancel script by SHA
        pipe = client.pipeline(transaction=False)
        now = time.time()
        for job_id in job_ids:
            scripts.cancel_job(pipe, JobKeys(job_id.decode()), now)
        codes = pipe.execute(raise_on_error=False)
        entries = int(client.xlen(keys.stream))
        client.delete(keys.stream)
    cancelled = sum(1 for code in codes if code == 1)
    return Purged(queue, entries, cancelled)
