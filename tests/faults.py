"""Fault injection for tests: a Redis client whose k-th round trip fails.

``faulty_client(url, Fault(k, mode))`` gives a ``redis.Redis`` that counts every
packed send (a command, a pipeline, a MULTI ... EXEC, the connection's own
handshake) and, at the k-th:

- ``"before"``: raises ConnectionError without sending (the server did nothing);
- ``"after"``: sends, drops the connection and raises ConnectionError (the
  server did it, the reply is lost);
- ``"pause"``: prints ``paused <k>`` on stdout after sending and blocks, for a
  parent process to SIGKILL (``python -m tests.faults URL JOB K``, which
  ``kill_retry_at`` runs and kills).

The client makes no retries of its own, so each fault reaches the caller.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Fault:
    at: int  #: the round trip that fails, counted from 1
    mode: str = "before"  #: "before", "after" or "pause"
    sent: int = 0  #: round trips so far
    fired: bool = False


def faulty_client(url: str, fault: Fault) -> redis.Redis:
    class FaultyConnection(redis.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            fault.sent += 1
            if fault.sent != fault.at:
                super().send_packed_command(command, check_health)
                return
            fault.fired = True
            if fault.mode == "before":
                raise redis.ConnectionError(f"injected fault before round trip {fault.at}")
            super().send_packed_command(command, check_health)
            if fault.mode == "pause":
                print(f"paused {fault.at}", flush=True)
                threading.Event().wait()  # until the parent kills us
            self.disconnect()
            raise redis.ConnectionError(f"injected fault after round trip {fault.at}")

    kwargs = {
        **redis.ConnectionPool.from_url(url).connection_kwargs,
        "retry": Retry(NoBackoff(), 0),
    }
    pool = redis.ConnectionPool(connection_class=FaultyConnection, **kwargs)
    return redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))


def _main(url: str, job_id: str, at: int) -> None:
    """Retry the job's failed items, pausing for a SIGKILL at round trip ``at``."""
    from producer import Client

    fault = Fault(at, "pause")
    count = Client(faulty_client(url, fault)).job(job_id).retry_failed()
    print(f"done {count}", flush=True)


def kill_retry_at(url: str, job_id: str, at: int) -> str:
    """Retry the job's failed items in a child process that pauses at round trip
    ``at``; SIGKILL it there. The first line it printed: ``paused <at>``, or
    ``done <count>`` when the retry needed fewer round trips."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.faults", url, job_id, str(at)],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        return child.stdout.readline()
    finally:
        child.kill()
        child.wait()


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
