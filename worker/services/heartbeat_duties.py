"""What a node's heartbeat thread does after each beat, besides renewing the
sources' leases and publishing the node record (``worker.node.heartbeat``).

- Samples queue depths for the metrics (``--metrics-port``), so a scrape never
  waits on Redis.
- Checks that the jobs of the batches the node holds (``worker.core.liveness``) are
  still active: one round trip per beat, only while it holds batches. A
  cancelled or vanished job is posted to the main thread (``JobsEnded({job:
  why})``), which hands no more chunks of it to the pool and lets its batches go
  instead of running them or holding them until their retries are due.
- Ends as ``abandoned`` the jobs it saw still enqueuing whose producer stopped
  renewing their enqueue lease (killed mid-enqueue; lua/abandon.lua): one
  script call per such job per beat. Their batches held are let go like a
  cancelled job's, and the reader skips the rest.
- For the functions this node cannot run (``worker.core.unrunnable``), reads the
  other live nodes' records to tell whether any node serving the queue can.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from redis.exceptions import ResponseError

from taskfan.settings import Settings
from worker.core.liveness import Liveness
from worker.core.unrunnable import Unrunnable
from worker.node.messages import Events, JobsEnded
from worker.services import backlog
from worker.services.stats import NodeView
from worker.sources.streams.redis_io import NodeRedis

if TYPE_CHECKING:
    from worker.services.metrics import MetricsServer

log = logging.getLogger(__name__)


class BeatDuties:
    def __init__(
        self,
        node_id: str,
        settings: Settings,
        node_redis: NodeRedis,
        view: NodeView,
        liveness: Liveness,
        events: Events,
        unrunnable: Unrunnable | None = None,
    ) -> None:
        self.id = node_id
        self.settings = settings
        self.redis = node_redis
        self.view = view
        self.liveness = liveness
        self.events = events
        self.unrunnable = unrunnable
        #: duties Redis refused, said once (``_duty``)
        self._refused: set[str] = set()
        self._metrics: MetricsServer | None = None
        #: when the next backlog sample is due (monotonic seconds)
        self._backlog_due = 0.0

    def start_metrics(self) -> None:
        from worker.services.metrics import MetricsServer

        settings = self.settings
        assert settings.metrics_port is not None
        self._metrics = MetricsServer(self.view, settings.metrics_host, settings.metrics_port)
        self.view.metrics_address = self._metrics.address
        log.info(
            "node %s: Prometheus metrics on http://%s/metrics", self.id, self.view.metrics_address
        )

    def __call__(self) -> None:
        """After each heartbeat (heartbeat thread): the metrics' queue depths,
        abandoned jobs, functions others may run, the jobs of the batches held."""
        self.view.beat_at = time.monotonic()  # the node reached Redis: ready (/readyz)
        self._sample_queues()
        self._duty("ending abandoned jobs", self._abandon_lapsed)
        self._duty("reading the other nodes' records", self._decide_unrunnable)
        self._check_held_jobs()

    def _check_held_jobs(self) -> None:
        """A job cancelled (or gone) while the node holds batches of it: tell the
        main thread, which runs nothing more of them (a batch fetched just before
        the cancel included) and drops their items waiting to retry. One round
        trip per heartbeat, only while batches are held."""
        jobs = sorted(self.liveness.jobs.copy())  # one C call: safe off the main thread
        if jobs:
            ended = self.redis.ended(jobs)
            if ended:
                self.events.put(JobsEnded(ended))

    def _duty(self, what: str, duty: Callable[[], None]) -> None:
        """Run one duty; a command Redis refuses (an ACL without it: NOPERM) is
        said once, and keeps neither the other duties nor later beats from
        running. Outages go up to the heartbeat's own backoff."""
        try:
            duty()
        except ResponseError as exc:
            if what not in self._refused:
                self._refused.add(what)
                log.warning("node %s: %s failed: %s", self.id, what, exc)

    def _decide_unrunnable(self) -> None:
        """Functions this node cannot run: does any other live node serving the
        queue run them? (worker.core.unrunnable; two round trips, only while there are
        such functions.)"""
        if self.unrunnable is not None and self.unrunnable.cannot:
            self.unrunnable.decide(self.settings.queues, self.redis.peers())

    def _abandon_lapsed(self) -> None:
        """Jobs whose producer died mid-enqueue end ``abandoned``; say so once."""
        abandoned = self.redis.abandon_lapsed()
        for job_id in abandoned:
            log.warning(
                "job %s: abandoned: its producer stopped renewing its enqueue lease before "
                "sending every batch; its remaining batches are skipped, its keys expire",
                job_id,
                extra={"job": job_id},
            )
        if abandoned:
            self.events.put(JobsEnded(abandoned))

    def _sample_queues(self) -> None:
        """Queue depths for the metrics, once per heartbeat (heartbeat thread)."""
        if self._metrics is not None:
            self.view.queues = self.redis.queue_depths()
            now = time.monotonic()
            if now >= self._backlog_due:  # at most 1/20 of the thread's time (10,000 jobs: 0.2 s)
                self.view.queue_items = backlog.sample(self.redis.client, self.redis.queues)
                self._backlog_due = now + 20 * (time.monotonic() - now)

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
