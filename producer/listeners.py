"""Saying when nobody is listening: a job waits on a queue no live node serves.

A job enqueued on a queue with no worker (a typo in ``--queue``, every node
stopped) waits for ever, and a waiter used to see nothing but a progress line
that never moves. ``serving`` counts the live nodes serving a queue (their
record has not expired); ``NobodyWatch`` asks at most every ``every`` seconds
while a producer waits, says ``no live node serves queue Q`` (for ``taskfan wait
--progress``), and logs it once as a WARNING after ``after`` seconds of it
(``Job.wait``, ``Job.results``, the ``Executor``). ``taskfan status`` and the
dashboard say it from ``producer.ops.overview`` (``warnings``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from taskfan import keys
from taskfan.connection import RedisClient
from taskfan.fields import queue_names

log = logging.getLogger(__name__)

#: seconds of nobody serving the queue before a waiter logs its warning
NOBODY_AFTER = 5.0
#: seconds between two looks at the node registry while waiting
CHECK_EVERY = 2.0


def nobody_serves(queue: str) -> str:
    return f"no live node serves queue {queue}"


def _advice(queue: str) -> str:
    return f"the job waits until a worker serving it starts (taskfan worker --queue {queue})"


def serving(client: RedisClient, queue: str) -> int:
    """How many live nodes serve ``queue``: two round trips."""
    listed: Any = client.zrange(keys.NODES, 0, -1)
    pipe = client.pipeline(transaction=False)
    count = 0
    for raw in listed:
        try:
            pipe.hget(keys.node(raw.decode("utf-8", "replace")), "queues")
        except ValueError:  # not a node id: someone else wrote it
            continue
        count += 1
    if not count:
        return 0
    return sum(queue in queue_names(field) for field in pipe.execute())


class NobodyWatch:
    """While a producer waits on a job of ``queue``: is anyone serving it?"""

    def __init__(
        self,
        client: RedisClient,
        queue: str,
        job_id: str,
        *,
        after: float | None = None,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.queue = queue
        self.job_id = job_id
        self.after = NOBODY_AFTER if after is None else after
        self.every = CHECK_EVERY if every is None else every
        self.clock = clock
        self._next = clock()
        #: since when nobody serves the queue: from the start of the wait when
        #: the first look finds nobody (waiters look on quiet block slices)
        self._nobody_since: float | None = None
        self._started = self._next
        self._looked = False
        self._warned = False
        #: what to say now: the message while nobody serves the queue, else None
        self.message: str | None = None

    def check(self) -> str | None:
        """Look (at most every ``every`` seconds); the message while nobody serves
        the queue. Logs it once, after ``after`` seconds of it. Never raises for
        Redis: a waiter rides out outages elsewhere."""
        now = self.clock()
        if now < self._next:
            return self.message
        self._next = now + self.every
        try:
            nobody = serving(self.client, self.queue) == 0
        except redis.RedisError:
            return self.message
        if not nobody:
            self._nobody_since, self.message, self._looked = None, None, True
            return None
        first, self._looked = not self._looked, True
        if self._nobody_since is None:
            self._nobody_since = self._started if first else now
        self.message = nobody_serves(self.queue)
        if not self._warned and now - self._nobody_since >= self.after:
            self._warned = True
            log.warning(
                "job %s: %s: %s",
                self.job_id, self.message, _advice(self.queue), extra={"job": self.job_id},
            )  # fmt: skip
        return self.message
