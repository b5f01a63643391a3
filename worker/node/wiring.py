"""How a node is put together: every collaborator of its main loop, built in one place.

``wire`` builds them from the settings, the node's Redis I/O
(``connect_node_redis``), its clock and a factory of its sources; ``Node``
receives the result (``NodeWiring``) and only runs them. What depends on what::

  settings, node_redis, clock
    -> guard, unrunnable -> scheduler (the pure core's books)
    -> events (the main thread's queue), stats
    -> sources (each source's plugin builds it from NodeParts)
    -> outbox (which source a batch goes back to; batches out for recording)
    -> feed (the pool: chunks in, results out; completions to the outbox)
    -> view (the node record and metrics: read from scheduler and feed)
    -> demand (when to ask which source), beat duties, heartbeat

A test builds a node on fakes through the same function (``Node(settings,
node_redis=..., clock=..., sources=...)``), so what it drives is wired as the
real node is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from taskfan.connection import RedisClient
from taskfan.errors import TaskfanError
from taskfan.settings import Settings
from worker.core.batches import Batch
from worker.core.chunk_sizing import ChunkSizer
from worker.core.entry_checks import Guard
from worker.core.scheduler import Scheduler
from worker.core.unrunnable import Unrunnable
from worker.node.demand import Demand
from worker.node.heartbeat import Heartbeat
from worker.node.messages import Events, new_events
from worker.node.outbox import Outbox
from worker.pool.pool_feed import PoolFeed
from worker.services.heartbeat_duties import BeatDuties
from worker.services.stats import NodeStats, NodeView
from worker.sources.base import NodeParts, Source
from worker.sources.registry import build_sources
from worker.sources.streams.node_record import new_node_id
from worker.sources.streams.redis_io import NodeRedis


@dataclass(frozen=True)
class NodeWiring:
    """A node's collaborators, wired to each other (``wire``)."""

    settings: Settings
    node_id: str
    #: monotonic seconds: grace period, retries, deadlines, pauses
    clock: Callable[[], float]
    #: the node's Redis I/O: its record, and the queue streams' commands
    node_redis: NodeRedis
    #: signatures, refusals and limits of what the node is given
    guard: Guard
    #: functions this node cannot import or may not run: their batches go back
    unrunnable: Unrunnable
    scheduler: Scheduler
    #: what the node's other threads tell its main thread
    events: Events
    #: what the node has done: the node record and the metrics read it
    stats: NodeStats
    #: where batches come from, and go back to (``worker.sources.base``)
    sources: Sequence[Source]
    outbox: Outbox
    feed: PoolFeed
    view: NodeView
    demand: Demand
    beat: BeatDuties
    heartbeat: Heartbeat


class PoolActivity:
    """What the node's pool is doing, as its view reads it from other threads:
    each call reads one value, or copies a dict in one C call."""

    def __init__(self, scheduler: Scheduler, feed: PoolFeed) -> None:
        self._scheduler = scheduler
        self._feed = feed

    def batches(self) -> list[Batch]:
        return list(self._scheduler.batches.values())

    def chunks(self) -> int:
        return len(self._scheduler.in_pool)

    def restarts(self) -> int:
        return self._feed.restarts

    def retrying(self) -> int:
        return self._scheduler.retries.pending


def connect_node_redis(settings: Settings, client: RedisClient | None = None) -> NodeRedis:
    """The node's Redis I/O for ``settings``: on ``client``, else on a connection
    to ``settings.redis_url``."""
    if client is None:
        if settings.redis_url is None:
            raise TaskfanError("a worker node needs a Redis URL (--redis-url)")
        from taskfan.connection import connect

        client = connect(settings.redis_url, block_seconds=settings.block_seconds)
    node_id = settings.node_name or new_node_id()
    signed = bool(settings.secrets)
    return NodeRedis(
        client, settings.queues, node_id, recheck_recorded=signed, trust_fresh=not signed
    )


def wire(
    settings: Settings,
    node_redis: NodeRedis,
    *,
    clock: Callable[[], float] = time.monotonic,
    sources: Callable[[NodeParts], Sequence[Source]] = build_sources,
) -> NodeWiring:
    """A node's collaborators for ``settings``, on ``node_redis``, timed by
    ``clock``; ``sources`` builds the sources it reads from (by default every
    plug-in of ``worker.sources`` the settings ask for)."""
    node_id = node_redis.node_id
    sizer = ChunkSizer(settings.processes, settings.chunksize)
    guard = Guard.from_settings(settings)
    unrunnable = Unrunnable(node_id)
    scheduler = Scheduler(
        settings.processes,
        sizer,
        settings.max_deliveries,
        clock=clock,
        guard=guard,
        unrunnable=unrunnable,
        round_trip=node_redis.round_trips.estimate,
    )
    events = new_events()
    stats = NodeStats()
    parts = NodeParts(settings, node_id, node_redis, events, stats, sizer, clock)
    built = list(sources(parts))
    outbox = Outbox(built, scheduler, stats)
    feed = PoolFeed(settings, scheduler, stats, events, outbox.owner, outbox.complete_maybe)
    pool = PoolActivity(scheduler, feed)
    view = NodeView(
        node_id, settings, time.time(), stats,
        batches=pool.batches, pool_chunks=pool.chunks, pool_restarts=pool.restarts,
        retrying=pool.retrying, posture=guard.posture(), cannot_run=unrunnable.published,
    )  # fmt: skip
    for source in built:
        view.source_fields.update(source.record_fields())
    beat = BeatDuties(node_id, settings, node_redis, view, scheduler.liveness, events, unrunnable)
    heartbeat = Heartbeat(
        node_redis, settings.heartbeat_interval, [s.beat for s in built], view.record,
        on_beat=beat,
    )  # fmt: skip
    return NodeWiring(
        settings=settings,
        node_id=node_id,
        clock=clock,
        node_redis=node_redis,
        guard=guard,
        unrunnable=unrunnable,
        scheduler=scheduler,
        events=events,
        stats=stats,
        sources=built,
        outbox=outbox,
        feed=feed,
        view=view,
        demand=Demand(scheduler, built, settings.heartbeat_interval, burst=settings.burst),
        beat=beat,
        heartbeat=heartbeat,
    )
