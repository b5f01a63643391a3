"""Helpers for the RQ tests: RQ's own worker in-process, and what RQ leaves in Redis,
normalized so that a run by RQ and a run by taskfan can be compared.

``snapshot`` dumps every ``rq:*`` key (type, content, TTL) with what must differ
between two runs replaced: times and durations (checked to be set, not compared),
execution ids, the worker's name and process facts, stream entry ids. TTLs and
registry scores (expiry times) are compared within ``SLACK`` seconds.
"""

from __future__ import annotations

import base64
import re
import signal
import time
import zlib
from collections.abc import Sequence
from typing import Any

import redis
from rq import Queue, SimpleWorker

#: seconds two TTLs or expiry times may differ by (the runs happen one after the other)
SLACK = 60.0
_TIME = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
_EPOCH = re.compile(rb"^1\d{9}(\.\d+)?$")
_EXEC = re.compile(r"[0-9a-f]{32}")
_PROCESS_FIELDS = {
    "pid", "hostname", "ip_address", "python_version", "version", "birth",
    "last_heartbeat", "death", "total_working_time", "current_job_working_time",
}  # fmt: skip


def db_url(url: str, db: int) -> str:
    """The same server, another database."""
    return re.sub(r"/\d*$", f"/{db}", url)


class Approx:
    """A number compared within SLACK (a TTL, or an expiry time relative to now)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Approx) and abs(self.value - other.value) <= SLACK

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"~{self.value:.0f}"


class _SimpleWorker(SimpleWorker):
    """RQ's SimpleWorker, its pub/sub thread polling every 0.1 s instead of 60: at
    the end of a burst RQ stops that thread, and redis-py's stop() waits for the
    poll under way, which sometimes held a test for a minute (long enough for the
    dead worker's hash to expire before a snapshot)."""

    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=0.1, daemon=True, exception_handler=self._pubsub_exception_handler
        )


def run_rq_worker(url: str, queues: Sequence[str], name: str = "rq-worker") -> None:
    """RQ's SimpleWorker in this process, in burst mode (its signal handlers undone after)."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    connection = redis.Redis.from_url(url)
    try:
        worker = _SimpleWorker(list(queues), connection=connection, name=name)
        worker.work(burst=True)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        connection.close()


def counts(client: redis.Redis, name: str) -> dict[str, int]:
    """What ``rq info`` shows of a queue, through RQ's API."""
    queue = Queue(name, connection=client)
    return {
        "queued": queue.count,
        "started": queue.started_job_registry.count,
        "finished": queue.finished_job_registry.count,
        "failed": queue.failed_job_registry.count,
        "scheduled": queue.scheduled_job_registry.count,
        "deferred": queue.deferred_job_registry.count,
    }


def snapshot(redis_client: redis.Redis, worker_names: Sequence[str]) -> dict[str, Any]:
    """Every rq:* key, normalized (see the module's docstring)."""
    client: Any = redis_client  # redis-py's hints: bytes | str everywhere
    now = time.time()
    names = [n.encode() for n in worker_names]
    out: dict[str, Any] = {}
    for raw_key in sorted(client.scan_iter(match="rq:*")):
        key = _text(_names(raw_key, names))
        kind = client.type(raw_key).decode()
        value: Any
        if kind == "string":
            value = _value(client.get(raw_key), names)
        elif kind == "hash":
            fields = client.hgetall(raw_key)
            worker = key.startswith("rq:worker:")
            value = {
                f.decode(): ("<set>" if v else "")
                if worker and f.decode() in _PROCESS_FIELDS
                else _value(v, names)
                for f, v in fields.items()
            }
        elif kind == "list":
            value = [_value(v, names) for v in client.lrange(raw_key, 0, -1)]
        elif kind == "set":
            value = sorted(_value(v, names) for v in client.smembers(raw_key))
        elif kind == "zset":
            value = {
                _value(m, names): _score(s, now)
                for m, s in client.zrange(raw_key, 0, -1, withscores=True)
            }
        elif kind == "stream":
            value = [_entry(fields, names) for _, fields in client.xrange(raw_key)]
        else:
            value = kind
        ttl = client.ttl(raw_key)
        out[key] = (kind, value, ttl if ttl < 0 else Approx(ttl))
    return out


def _names(data: bytes, names: list[bytes]) -> bytes:
    for name in names:
        data = data.replace(name, b"<worker>")
    return _EXEC.sub("<exec>", data.decode(errors="replace")).encode()


def _text(data: bytes) -> str:
    return data.decode(errors="replace")


def _value(data: bytes | None, names: list[bytes]) -> Any:
    if data is None:
        return None
    if _TIME.match(data):
        return "<time>"
    if _EPOCH.match(data):
        return "<ts>"
    try:
        return _text(_names(data, names)) if data.decode() else ""
    except UnicodeDecodeError:
        return data  # pickled: compared byte for byte


def _score(score: float, now: float) -> Any:
    if score == float("inf"):
        return "inf"
    if score > 1e9:
        return Approx(score - now)  # an expiry time, relative to now
    return score


def _entry(fields: dict[bytes, bytes], names: list[bytes]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw_name, raw in fields.items():
        name = raw_name.decode()
        if name == "exc_string":
            text = zlib.decompress(base64.b64decode(raw)).decode()
            lines = text.strip().splitlines()
            out[name] = (lines[0], lines[-1]) if lines else ""
        elif name == "return_value":
            out[name] = base64.b64decode(raw)
        elif name in ("execution_started_at", "execution_ended_at"):
            out[name] = "<ts>" if raw else ""
        else:
            out[name] = _value(raw, names)
    return out
