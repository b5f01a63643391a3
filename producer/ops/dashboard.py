"""``taskfan dashboard``: a live page of queues, jobs, nodes and recent failures.

The standard library's ``http.server`` serves one static page
(``dashboard.html``, with a little inline JavaScript that polls) and one JSON
endpoint, ``/api/overview``, built by ``producer.ops.overview``. Read-only by
default. ``--allow-actions`` adds two POST endpoints (cancel a job, requeue a
dead letter); they need the page's random token in an ``X-Taskfan-Token``
header, so another site open in the same browser cannot post to them.

It binds 127.0.0.1 unless told otherwise. While it does, it answers only
requests whose ``Host`` is a loopback name: a web page that rebinds its own
DNS name to 127.0.0.1 cannot read it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

import click
import redis

from producer.ops import deadletters, overview
from producer.ops.cli import load_settings, open_client
from producer.ops.cli_options import cli_errors, redis_option, secret_option
from producer.ops.skipped import Skipped
from taskfan import scripts
from taskfan.cli import LIMIT, PORT, log_options, warn_secret_argument
from taskfan.connection import RedisClient
from taskfan.errors import TaskfanError
from taskfan.keys import JobKeys, QueueKeys
from taskfan.signing import Keyring

log = logging.getLogger(__name__)

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


class Dashboard:
    """The data behind the page, cached for ``min_interval`` seconds so that many
    open pages cost Redis no more than one."""

    def __init__(
        self,
        r: RedisClient,
        limit: int = 20,
        actions: bool = False,
        min_interval: float = 1.0,
        keyring: Keyring | None = None,
    ) -> None:
        self.redis = r
        #: signs requeued dead letters (and checks theirs) when the cluster signs
        self.keyring = keyring
        self.limit = limit
        self.actions = actions
        self.token = secrets.token_urlsafe(24)
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._cached: tuple[float, bytes] | None = None
        #: (job id, batches done, failed) -> its failures, and what could not be read
        self._failures: dict[tuple[Any, ...], tuple[list[Any], list[dict[str, str]]]] = {}

    def overview(self) -> bytes:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.min_interval:
                return self._cached[1]
            data = overview.gather(self.redis, self.limit)
            data["failures"] = self._recent_failures(data["jobs"], data["skipped"])
            data["dead_letters"] = [
                d.as_dict()
                for q in data["queues"]
                if q["dead"]
                for d in deadletters.list_dead(self.redis, q["name"], limit=10)
            ]
            data["actions"] = self.actions
            body = json.dumps(data, allow_nan=False).encode()
            self._cached = (time.monotonic(), body)
            return body

    def _recent_failures(
        self, rows: list[dict[str, Any]], skipped: list[dict[str, str]]
    ) -> list[dict[str, Any]]:
        """The first failures of the newest jobs with failures; the batches they
        could not be read from join ``skipped``."""
        out: list[dict[str, Any]] = []
        keep: dict[tuple[Any, ...], tuple[list[dict[str, Any]], list[dict[str, str]]]] = {}
        for row in rows:
            if not row["failed"] or len(out) >= 10:
                continue
            key = (row["id"], row["batches_done"], row["failed"])
            cached = self._failures.get(key)
            if cached is None:
                passed: list[Skipped] = []
                found = overview.recent_failures(self.redis, [row], 3, 3, passed)
                cached = (found, [s.as_dict() for s in passed])
            keep[key] = cached
            out += cached[0]
            skipped += cached[1]
        self._failures = keep
        return out[:10]

    # ----------------------------------------------------------------- actions

    def cancel(self, job_id: str) -> dict[str, Any]:
        code = scripts.cancel_job(self.redis, JobKeys(job_id), time.time())
        said = {1: "cancelled", 0: "already ended", -1: "not found"}
        self._cached = None
        return {"job": job_id, "result": said.get(code, str(code))}

    def requeue(self, queue: str, dead_id: str) -> dict[str, Any]:
        done = deadletters.requeue(self.redis, queue, dead_id, self.keyring)
        self._cached = None
        return {"dead_letter": dead_id, "entry": done.entry_id, "round": done.round}


def page(token: str | None) -> bytes:
    html = (resources.files("producer.ops") / "dashboard.html").read_text(encoding="utf-8")
    return html.replace("{{TOKEN}}", token or "").encode("utf-8")


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "taskfan-dashboard"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "connect-src 'self'; img-src 'self' data:",
        )
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode())

    def _host_allowed(self) -> bool:
        if not self.server.loopback_only:
            return True
        host = urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        return host in LOOPBACK_NAMES or host == "::1"

    def do_GET(self) -> None:
        if not self._host_allowed():
            return self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
        dashboard = self.server.dashboard
        path = urlsplit(self.path).path
        try:
            if path in ("/", "/index.html"):
                token = dashboard.token if dashboard.actions else None
                return self._send(HTTPStatus.OK, page(token), "text/html; charset=utf-8")
            if path == "/api/overview":
                return self._send(HTTPStatus.OK, dashboard.overview())
            if path == "/healthz":
                return self._send(HTTPStatus.OK, b"ok\n", "text/plain")
        except (redis.RedisError, TaskfanError) as exc:
            log.warning("dashboard: reading Redis failed: %s", exc)
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"Redis: {exc}")
        except Exception as exc:  # a record no reader foresaw: answer, and say what
            log.exception("dashboard: building %s failed", path)
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")
        return self._error(HTTPStatus.NOT_FOUND, "not found")

    def do_POST(self) -> None:
        dashboard = self.server.dashboard
        if not self._host_allowed():
            return self._error(HTTPStatus.FORBIDDEN, "unexpected Host header")
        if not dashboard.actions:
            return self._error(HTTPStatus.FORBIDDEN, "read-only: start with --allow-actions")
        if not secrets.compare_digest(self.headers.get("X-Taskfan-Token", ""), dashboard.token):
            return self._error(HTTPStatus.FORBIDDEN, "missing or wrong X-Taskfan-Token")
        parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
        try:
            if len(parts) == 4 and parts[:2] == ["api", "jobs"] and parts[3] == "cancel":
                JobKeys(parts[2])
                return self._send(HTTPStatus.OK, json.dumps(dashboard.cancel(parts[2])).encode())
            if len(parts) == 5 and parts[:2] == ["api", "dead"] and parts[4] == "requeue":
                QueueKeys(parts[2])
                result = dashboard.requeue(parts[2], parts[3])
                return self._send(HTTPStatus.OK, json.dumps(result).encode())
        except ValueError as exc:
            return self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except TaskfanError as exc:
            return self._error(HTTPStatus.CONFLICT, str(exc))
        except redis.RedisError as exc:
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"Redis: {exc}")
        return self._error(HTTPStatus.NOT_FOUND, "not found")


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], dashboard: Dashboard) -> None:
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.dashboard = dashboard
        self.loopback_only = _is_loopback(host)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--port", type=PORT, default=8765, show_default=True, help="Port to serve on")
@click.option(
    "--host", default="127.0.0.1", show_default=True,
    help="Address to bind; 0.0.0.0 serves every interface (anyone who reaches it sees "
    "job ids, function names and error messages)",
)  # fmt: skip
@click.option(
    "--allow-actions", is_flag=True,
    help="Let the page cancel jobs and requeue dead letters (default: read-only)",
)  # fmt: skip
@click.option(
    "--limit", type=LIMIT, default=20, show_default=True, help="Jobs shown per queue, newest first"
)
@secret_option
@redis_option
@log_options("INFO")
def dashboard(
    port: int,
    host: str,
    allow_actions: bool,
    limit: int,
    secret_file: str | None,
    redis_url: str | None,
) -> None:
    """Serve a live dashboard page: queues, jobs with progress bars, nodes and
    their rates, recent failures and dead letters. It refreshes every 2 seconds.

    \b
    Example:
      taskfan dashboard --port 8765     # then open http://127.0.0.1:8765/
    """
    with cli_errors():
        warn_secret_argument(redis_url)
        client = open_client(load_settings(redis_url, secret_file=secret_file))
        board = Dashboard(client.redis, limit=limit, actions=allow_actions, keyring=client.keyring)
        try:
            server = DashboardServer((host, port), board)
        except OSError as exc:
            raise TaskfanError(f"cannot serve the dashboard on {host}:{port}: {exc}") from None
    where = f"http://{host if ':' not in host else f'[{host}]'}:{server.server_port}/"
    mode = "actions allowed" if allow_actions else "read-only"
    click.echo(f"taskfan dashboard on {where} ({mode}); Ctrl-C stops it", err=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        click.echo("", err=True)
    finally:
        server.server_close()
