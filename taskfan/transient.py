"""Transient Redis errors, and the one backoff policy for riding them out.

Every part of taskfan that keeps trying through an outage (a node's reader,
writer and heartbeat, the RQ source, a producer waiting on a job's events, the
Executor's collector) catches ``TRANSIENT`` and waits per ``Backoff`` before it
tries again, logging one line per failure. Anything else is a real error.
"""

from __future__ import annotations

import threading

import redis
from redis.exceptions import (
    AskError,
    ClusterError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)

from taskfan.errors import BrokerUnavailable

#: errors after which a caller backs off and tries again: an unreachable or
#: restarting server and dropped connections (ConnectionError, LOADING included),
#: timeouts, a demoted master (READONLY), a cluster mid-failover or
#: mid-resharding (CLUSTERDOWN, TRYAGAIN, ASK, a slot map being rebuilt), a server
#: out of memory (it may free some: a node keeps its results meanwhile)
TRANSIENT: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ReadOnlyError,
    ClusterError,
    TryAgainError,
    AskError,
    RedisClusterException,
    OutOfMemoryError,
)

#: Redis is away: a transient error, raw or as our code translates it where it
#: enters (``BrokerUnavailable``)
AWAY: tuple[type[Exception], ...] = (BrokerUnavailable, *TRANSIENT)


class Backoff:
    """Exponential backoff between tries: 0.1 s doubling to 5 s; ``reset`` after
    a success."""

    FIRST = 0.1
    LONGEST = 5.0

    def __init__(self) -> None:
        self.delay = self.FIRST

    def reset(self) -> None:
        self.delay = self.FIRST

    def next(self) -> float:
        """The delay to wait now; the next one doubles (up to ``LONGEST``)."""
        delay, self.delay = self.delay, min(self.LONGEST, self.delay * 2)
        return delay

    def wait(self, stop: threading.Event) -> None:
        """Wait out the delay, or until ``stop`` is set."""
        stop.wait(self.next())
