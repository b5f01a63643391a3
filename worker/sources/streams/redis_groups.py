"""The node's Redis state and its consumer groups: creating them, and again
when they vanish.

A Redis restarted without persistence (or flushed, or a queue purged) comes
back with no queue stream, no consumer group and no scripts. Every command that
names the group answers ``NOGROUP`` then, and whichever path meets it first
(read, reclaim, lease refresh, hand back, acknowledgement) creates the groups
again and loads the scripts (``_regroup``): the batches the group held are gone
with it, so there is nothing to reclaim, refresh or acknowledge, and the node
goes on serving new jobs without a restart. NOSCRIPT is handled where scripts
run (``worker.sources.streams.batch_writes``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from redis.exceptions import ResponseError

from taskfan import keys, scripts
from taskfan.connection import RedisClient
from taskfan.keys import GROUP, QueueKeys
from worker.sources.streams.round_trips import RoundTrips
from worker.sources.streams.stream_reads import stream_reads

log = logging.getLogger(__name__)


class NodeRedisBase:
    """What every part of ``worker.sources.streams.redis_io.NodeRedis`` shares: the client, the
    queues, the node id, the job-state caches, and the groups' upkeep."""

    def __init__(
        self,
        client: RedisClient,
        queues: Sequence[str],
        node_id: str,
        clock: Callable[[], float] = time.monotonic,
        recheck_recorded: bool = False,
        trust_fresh: bool = False,
    ) -> None:
        self.client = client
        #: run a batch added moments ago without first reading its job's state
        #: (``worker.sources.streams.job_states``); a node with a secret checks every batch
        self.trust_fresh = trust_fresh
        #: Redis's clock minus ours (wall time, seconds), from ``sync_clock``
        self.clock_offset: float | None = None
        #: this node's round trip to Redis, measured by its own calls
        self.round_trips = RoundTrips()
        #: look a job up again on the next read once one of its batches is being
        #: recorded (a node with a secret: a copy of an entry read right after its
        #: job finished is then refused as a replay, see worker.core.replays)
        self.recheck_recorded = recheck_recorded
        self.clock = clock
        #: job id -> until when it counts as active (``clock`` time)
        self._active: dict[bytes, float] = {}
        #: job id -> the nonce in its meta, as last read
        self._nonces: dict[bytes, bytes] = {}
        #: jobs seen active and unsealed: the heartbeat ends them as abandoned
        #: when their producer's enqueue lease lapses (``abandon_lapsed``)
        self._enqueuing: set[str] = set()
        #: jobs whose batches ran without a state read (just added): the
        #: heartbeat reads their states (``abandon_lapsed``)
        self._unchecked: set[bytes] = set()
        self._enqueuing_lock = threading.Lock()
        self.queues = [QueueKeys(name) for name in queues]
        self.node_id = node_id
        self._by_stream = {q.stream.encode(): q for q in self.queues}
        # Blocking reads get a connection of their own, so that a stopping node
        # can cut them short with CLIENT UNBLOCK instead of waiting them out.
        self._reads = stream_reads(client)

    def sync_clock(self) -> None:
        """Read Redis's clock (TIME): how far it is from ours, which tells how
        long ago a stream entry was added (its id is Redis's time); and the
        round trip, measured on the way."""
        sent = time.time()
        seconds, micros = self.client.time()
        back = time.time()
        self.round_trips.observe(back - sent)
        self.clock_offset = seconds + micros / 1e6 - (sent + back) / 2

    def interrupt(self) -> None:
        """End a blocking read() now (it returns no batches). Thread-safe."""
        self._reads.interrupt()

    def prepare(self) -> None:
        """Create the consumer groups (reading from the start) and load the scripts."""
        for queue in self.queues:
            try:
                self.client.xgroup_create(queue.stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self.client.sadd(keys.QUEUES, queue.name)
        scripts.load_all(self.client)

    def _regroup(self, exc: Exception) -> None:
        """The stream or its group vanished (a purge, a FLUSHALL, a Redis restarted
        without persistence), maybe while we were blocked on it: create them again."""
        log.warning(
            "queue stream or consumer group missing (Redis restarted empty, flushed, or "
            "the queue purged); creating it again: %s",
            exc,
        )
        self.prepare()


def lost_group(exc: Exception) -> bool:
    """Redis says the queue stream or its consumer group does not exist (NOGROUP),
    or that it vanished under a blocked read (UNBLOCKED)."""
    return isinstance(exc, ResponseError) and str(exc).startswith(("NOGROUP", "UNBLOCKED"))
