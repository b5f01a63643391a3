"""A node started in the background (``taskfan worker &`` in a script, nohup)
inherits SIGINT ignored, so that a Ctrl-C meant for the foreground job does not
reach it; like Python itself and the classic Unix tools, it keeps it ignored and
stops on SIGTERM."""

from __future__ import annotations

import signal

import redis

from taskfan.keys import NODES
from tests.cli_support import SIGINT_IGNORED
from tests.helpers import wait_until
from tests.workers import WorkerProcess


def test_a_node_started_with_sigint_ignored_keeps_it_ignored(
    redis_url: str, r: redis.Redis
) -> None:
    worker = WorkerProcess(redis_url, processes=1, wrap=SIGINT_IGNORED)
    try:
        wait_until(lambda: r.zcard(NODES) == 1, timeout=30, message=worker.log)
        worker.signal(signal.SIGINT)  # a terminal's Ctrl-C for the foreground job
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        log = worker.log()
        assert "SIGINT is ignored" in log, log  # says how to stop it instead
        assert "SIGINT:" not in log and "again" not in log, log  # one stop: SIGTERM's
        assert "SIGTERM: finishing the batches in flight" in log, log
    finally:
        worker.close()
