"""Helpers for tests. ``wait_until`` is the only polling tests may do: no sleeps.
``Counting`` is an endless input that counts what was taken from it; ``entries_of``
lists a job's batch entries still in the default queue's stream; ``free_port`` and
``scrape`` serve tests of a node's metrics port."""

from __future__ import annotations

import itertools
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import redis

from taskfan.keys import QueueKeys

T = TypeVar("T")

#: worker env for cancel tests: the node learns of a cancel at its next heartbeat
FAST_BEAT = {"TASKFAN_HEARTBEAT_INTERVAL": "0.2"}


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.01,
    message: str | Callable[[], str] = "the condition",
) -> T:
    """Poll ``predicate`` until it returns something true, and return that.

    Raises AssertionError naming ``message`` (a string, or a function that builds
    one at failure time, e.g. to include a worker's log) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout}s waiting for {text}")
        time.sleep(interval)


def dead_letters(r: redis.Redis, queue: str, count: int = 1, timeout: float = 30) -> Any:
    """The queue's dead letters, once there are at least ``count``. A node records a
    refused batch's outcomes (job slot) before it writes the dead letter (queue
    slot), so a reader may see the outcomes first."""
    key = QueueKeys(queue).dead
    wait_until(lambda: r.xlen(key) >= count, timeout, message=f"{count} dead letter(s) in {key}")
    return r.xrange(key)


class Counting:
    """An endless input (0, 1, 2, ...) that counts the items taken from it
    (``taken``), and the most it was ever ahead of ``consumed`` (``worst``),
    which a test advances as it reads results."""

    def __init__(self) -> None:
        self.taken = 0
        self.consumed = 0
        self.worst = 0
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[int]:
        for n in itertools.count():
            with self._lock:
                self.taken += 1
                self.worst = max(self.worst, self.taken - self.consumed)
            yield n


def entries_of(r: redis.Redis, job_id: str) -> list[Any]:
    """The ids of job ``job_id``'s entries in queue ``default``'s stream."""
    entries: Any = r.xrange(QueueKeys("default").stream)
    return [entry_id for entry_id, fields in entries if fields[b"j"] == job_id.encode()]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(port: int) -> str:
    """The Prometheus page a node serves on ``port`` (``--metrics-port``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
        return text
