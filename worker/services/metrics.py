"""A node's Prometheus metrics (``taskfan worker --metrics-port``).

Nothing here runs on the node's hot path: the node keeps plain counters
(``worker.services.stats``) and this collector turns them into metric families when
Prometheus scrapes. Queue depths come from Redis, sampled by the heartbeat
thread every heartbeat (the scrape itself never waits on Redis). Each node has a
registry of its own, so several nodes can live in one process (tests do).

Function labels are bounded (``worker.services.stats.MAX_FUNCTIONS``, then ``(other)``;
dead-lettered batches under ``(refused)``): entries are untrusted.

Metrics (counters end in ``_total``):

- ``taskfan_items_processed_total{queue,function}``: items recorded, succeeded or failed
- ``taskfan_items_failed_total{queue,function}``
- ``taskfan_batches_processed_total{queue,function}``, ``taskfan_batches_failed_total``
  (batches with a failed item), ``taskfan_batches_dead_lettered_total``
- ``taskfan_items_retried_total{queue,function}``: attempts made again after an item raised
- ``taskfan_batches_in_flight``: batches the node holds; ``taskfan_pool_chunks``:
  chunks in its pool (running or queued there); ``taskfan_items_retrying``: items
  waiting in the node for a retry's backoff
- ``taskfan_pool_restarts_total``; ``taskfan_reclaimed_batches_total{queue}``;
  ``taskfan_skipped_batches_total{queue}`` (their job cancelled, abandoned or
  gone); ``taskfan_given_back_batches_total{queue}`` (a function this node
  cannot run, ``worker.core.unrunnable``)
- ``taskfan_item_duration_seconds{function}``: histogram, each item at its chunk's average
- ``taskfan_queue_items_waiting{queue}``, ``taskfan_queue_items_in_flight{queue}``:
  the backlog in items, for autoscalers (``worker.services.backlog``; docs/autoscaling.md)
- ``taskfan_queue_waiting_batches{queue}``, ``taskfan_queue_in_flight_batches{queue}``,
  ``taskfan_queue_dead_letters{queue}``: the queue as the node last saw it
- ``taskfan_node_info{node,host,version}``, ``taskfan_node_processes``,
  ``taskfan_node_start_time_seconds``

The same server answers health probes (Kubernetes, Docker): ``/healthz`` (live:
200 while the process serves; a Redis outage does not make a node unhealthy,
restarting it would not help) and ``/readyz`` (ready: 200 when the last
heartbeat reached Redis within three heartbeat intervals, else 503).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from taskfan import __version__
from taskfan.errors import ConfigError
from worker.services.stats import NodeView

log = logging.getLogger(__name__)


class NodeCollector(Collector):
    def __init__(self, view: NodeView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        view, stats = self.view, self.view.stats
        info = GaugeMetricFamily(
            "taskfan_node_info", "The node: its id, host and taskfan version",
            labels=["node", "host", "version"],
        )  # fmt: skip
        info.add_metric([view.node_id, socket.gethostname(), __version__], 1)
        yield info
        yield GaugeMetricFamily(
            "taskfan_node_processes", "Pool processes", value=view.settings.processes
        )
        yield GaugeMetricFamily(
            "taskfan_node_start_time_seconds", "When the node started (Unix time)",
            value=view.started_at,
        )  # fmt: skip
        by_label = ["queue", "function"]
        families = {
            "items_processed": ("Items recorded, succeeded or failed", by_label),
            "items_failed": ("Items recorded as failed", by_label),
            "batches_processed": ("Batches recorded", by_label),
            "batches_failed": ("Batches recorded with at least one failed item", by_label),
            "batches_dead_lettered": ("Batches moved to the dead-letter stream", by_label),
            "items_retried": ("Attempts made again after an item raised (retries)", by_label),
        }
        counters = {
            name: CounterMetricFamily(f"taskfan_{name}", doc, labels=labels)
            for name, (doc, labels) in families.items()
        }
        for (queue, fn_ref), c in stats.counts.copy().items():
            labels = [queue, fn_ref]
            counters["items_processed"].add_metric(labels, c.items_ok + c.items_failed)
            counters["items_failed"].add_metric(labels, c.items_failed)
            counters["batches_processed"].add_metric(labels, c.batches)
            counters["batches_failed"].add_metric(labels, c.batches_failed)
            counters["batches_dead_lettered"].add_metric(labels, c.batches_dead)
            counters["items_retried"].add_metric(labels, c.items_retried)
        yield from counters.values()
        reclaims = CounterMetricFamily(
            "taskfan_reclaimed_batches",
            "Batches taken over from nodes whose lease lapsed",
            labels=["queue"],
        )
        for queue, count in stats.reclaims.copy().items():
            reclaims.add_metric([queue], count)
        yield reclaims
        for name, text, counts in (
            ("taskfan_skipped_batches", "Batches acknowledged unrun: their job was "
             "cancelled, abandoned or gone", stats.skipped),
            ("taskfan_given_back_batches", "Batches handed back unrun: this node cannot "
             "run their function (it cannot import it, or its --allow refuses it)",
             stats.given_back),
        ):  # fmt: skip
            family = CounterMetricFamily(name, text, labels=["queue"])
            for queue, count in counts.copy().items():
                family.add_metric([queue], count)
            yield family
        yield CounterMetricFamily(
            "taskfan_pool_restarts", "Times the process pool was rebuilt (a process died, "
            "or a hard timeout or a hard cancel killed it)", value=view.pool_restarts(),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "taskfan_batches_in_flight", "Batches the node holds", value=len(view.batches())
        )
        yield GaugeMetricFamily(
            "taskfan_pool_chunks", "Chunks in the pool, running or waiting there",
            value=view.pool_chunks(),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "taskfan_items_retrying", "Items waiting in the node for a retry's backoff",
            value=view.retrying(),
        )  # fmt: skip
        yield self._durations()
        yield from self._queues()

    def _durations(self) -> Metric:
        family = HistogramMetricFamily(
            "taskfan_item_duration_seconds",
            "Seconds per item, observed per chunk at the chunk's average",
            labels=["function"],
        )
        for fn_ref, durations in self.view.stats.durations.copy().items():
            family.add_metric([fn_ref], durations.cumulative(), durations.sum)
        return family

    def _queues(self) -> Iterator[Metric]:
        names = {
            "waiting": "Batches waiting in the queue (not yet delivered)",
            "in_flight": "Batches delivered to a node and not yet recorded",
        }
        waiting, in_flight = (
            GaugeMetricFamily(f"taskfan_queue_{n}_batches", doc, labels=["queue"])
            for n, doc in names.items()
        )
        dead = GaugeMetricFamily(
            "taskfan_queue_dead_letters", "Entries in the dead-letter stream", labels=["queue"]
        )
        for queue, (w, f, d) in dict(self.view.queues).items():
            waiting.add_metric([queue], w)
            in_flight.add_metric([queue], f)
            dead.add_metric([queue], d)
        yield from (waiting, in_flight, dead)
        items = {
            "waiting": "Items waiting in the queue: enqueued, not recorded, held by no live node",
            "in_flight": "Items in batches live nodes hold, not yet recorded",
        }
        items_waiting, items_in_flight = (
            GaugeMetricFamily(f"taskfan_queue_items_{n}", doc, labels=["queue"])
            for n, doc in items.items()
        )
        for queue, (w, f) in dict(self.view.queue_items).items():
            items_waiting.add_metric([queue], w)
            items_in_flight.add_metric([queue], f)
        yield from (items_waiting, items_in_flight)


def readiness(view: NodeView, now: float) -> str | None:
    """Why the node is not ready (None: it is): its heartbeat must have reached
    Redis within three heartbeat intervals."""
    if view.beat_at is None:
        return "no heartbeat has reached Redis yet"
    late = now - view.beat_at
    if late > 3 * view.settings.heartbeat_interval:
        return f"the last heartbeat reached Redis {late:.0f}s ago"
    return None


def _best_family(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """IPv4 or IPv6, as the host name resolves (``::`` binds IPv6)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    return family, (str(sockaddr[0]), int(sockaddr[1]))


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds: not for the node's log


class MetricsServer:
    """The HTTP server Prometheus scrapes (``/metrics``) and probes ask
    (``/healthz``, ``/readyz``), on a thread of its own."""

    def __init__(
        self,
        view: NodeView,
        host: str,
        port: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.view = view
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(view))
        self._metrics = make_wsgi_app(self.registry)
        try:
            family, address = _best_family(host, port)
            server = type("Server", (ThreadingWSGIServer,), {"address_family": family})
            self._server: Any = make_server(
                address[0], address[1], self._app, server, handler_class=_Quiet
            )
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc}") from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()
        self.port: int = self._server.server_port
        self.host = host

    def _app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in ("/healthz", "/readyz"):
            body: Iterable[bytes] = self._metrics(environ, start_response)
            return body
        why = readiness(self.view, self.clock()) if path == "/readyz" else None
        status = "200 OK" if why is None else "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [f"{why or 'ok'}\n".encode()]

    @property
    def address(self) -> str:
        """host:port where others reach it (the host name when bound to every interface)."""
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        thread: threading.Thread = self._thread
        thread.join(timeout=5)
