"""Celery: ``task.chunks`` on a prefork worker of concurrency 2, Redis broker and backend.

The worker is a subprocess of the driver (``celery worker --pool prefork
--concurrency 2``) in a process group of its own, stopped with it; broker and
result backend are the suite's redis-server, database 1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

VARIANTS = {"chunks": "Celery, task.chunks, prefork 2"}
READY_TIMEOUT = 60.0
POLL = 0.005


def celery_url(redis_url: str) -> str:
    """The suite's server, database 1 (taskfan uses 0)."""
    base, _, _ = redis_url.rpartition("/")
    return f"{base}/1"


class CeleryPeer:
    def __init__(self, redis_url: str) -> None:
        os.environ["TASKFAN_BENCH_CELERY_URL"] = celery_url(redis_url)
        from benchmarks.peers import celery_app  # reads the URL at import

        self.app = celery_app.app
        self.task = celery_app.task
        self.worker = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "--quiet", "-A", "benchmarks.peers.celery_app",
                "worker", "--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def warm(self, items: list[Any]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while self.worker.poll() is None:
            if self.app.control.ping(timeout=0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Celery worker did not answer in {READY_TIMEOUT}s")
        if self.worker.poll() is not None:
            raise RuntimeError(f"the Celery worker exited with {self.worker.returncode}")
        self.run("chunks", items, 1)

    def run(self, variant: str, items: list[Any], chunksize: int) -> list[Any]:
        assert variant in VARIANTS
        result = self.task.chunks([(item,) for item in items], chunksize).apply_async()
        # GroupResult.get polls every 0.5 s by default, which would time the
        # poll rather than Celery: 5 ms, like the suite's other clocks
        parts = result.get(timeout=600, propagate=True, interval=POLL)
        result.forget()
        return [value for part in parts for value in part]

    def close(self) -> None:
        if self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)  # warm shutdown: it stops its pool
            try:
                self.worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait()
        # prefork children left behind by a worker that died first
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.worker.pid, signal.SIGKILL)
