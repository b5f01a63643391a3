"""The Celery app the Celery peer's worker and driver share.

Its broker and result backend are the suite's own redis-server (a database of
its own), passed in ``TASKFAN_BENCH_CELERY_URL``; never the machine's Redis.
"""

from __future__ import annotations

import os

from celery import Celery

from benchmarks.tasks import task as seed_task

URL = os.environ.get("TASKFAN_BENCH_CELERY_URL", "redis://127.0.0.1:1/15")

app = Celery("taskfan_bench", broker=URL, backend=URL)
app.conf.update(
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    result_expires=600,
)


@app.task(name="taskfan_bench.task")
def task(params: tuple[float, int]) -> float:
    return seed_task(params)
