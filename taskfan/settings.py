"""Settings: one frozen, validated dataclass, built at the edge.

The CLI and ``Settings.from_env`` build it from options and ``TASKFAN_*``
environment variables; nothing reads the environment at import time.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskfan.bounds import (
    MAX_BLOCK,
    MAX_COUNT,
    MAX_LEASE,
    MAX_PROCESSES,
    MAX_RESULT_TTL,
    count_problem,
    seconds_problem,
)
from taskfan.codec import CODECS
from taskfan.errors import ConfigError
from taskfan.keys import QueueKeys, not_utf8
from taskfan.limits import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_ITEM_BYTES,
    MiB,
    check_limits,
    default_max_decoded,
    parse_size,
)
from taskfan.refs import check_allow_prefix
from taskfan.secret import check_secret, read_secret_file

DEFAULT_RESULT_TTL = 7 * 24 * 3600
#: seconds an unsealed job lives without its producer renewing its enqueue lease
DEFAULT_ENQUEUE_LEASE = 60.0
#: bounds of enqueue_lease: renewed every third of it, and a lease of days would
#: leave a dead producer's job open that long
ENQUEUE_LEASE_BOUNDS = (1.0, 86_400.0)


def default_start_method() -> str:
    """forkserver where it exists (the node has threads, so plain fork is unsafe)."""
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods and sys.platform != "darwin" else "spawn"


#: environment variable -> (field, parser)
ENV: dict[str, tuple[str, Any]] = {}


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _secrets(text: str) -> tuple[str, ...]:
    """Comma-separated secrets, each checked (the first signs)."""
    secrets = _split(text)
    for secret in secrets:
        check_secret(secret)
    return secrets


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def secrets_from_env(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The secrets ``TASKFAN_SECRET`` or ``TASKFAN_SECRET_FILE`` give, as the CLI
    and nodes read them; () when neither is set. Read when called, never at import:
    the Python API calls it when no ``secret=`` is passed."""
    secret, secret_file = environ.get("TASKFAN_SECRET"), environ.get("TASKFAN_SECRET_FILE")
    if secret and secret_file:
        raise ConfigError("set TASKFAN_SECRET or TASKFAN_SECRET_FILE, not both")
    try:
        if secret:
            return _secrets(secret)
        if secret_file:
            return read_secret_file(secret_file)
    except ConfigError as exc:
        var = "TASKFAN_SECRET=***" if secret else f"TASKFAN_SECRET_FILE={secret_file!r}"
        raise ConfigError(f"environment variable {var}: {exc}") from None
    return ()


@dataclass(frozen=True)
class Settings:
    """Everything a producer or a worker node can be told."""

    #: Redis URL; None means "not configured" (the CLI's ``run`` then embeds a server)
    redis_url: str | None = None
    #: queues a node reads, in priority order; a producer uses the first
    queues: tuple[str, ...] = ("default",)
    #: pool processes per node
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    #: items per pool message; None: decided per function from measured cost
    chunksize: int | None = None
    #: items per Redis entry; None: decided by the producer
    batch_size: int | None = None
    #: seconds a finished job's results are kept
    result_ttl: int = DEFAULT_RESULT_TTL
    #: seconds after its issue a signed batch entry is refused (a replay, or one
    #: that waited too long); 0: the result TTL (DEFAULT_RESULT_TTL when that is 0)
    max_entry_age: int = 0
    #: seconds a job being enqueued outlives its producer: renewed while the
    #: producer lives, then the job ends "abandoned"
    enqueue_lease: float = DEFAULT_ENQUEUE_LEASE
    #: codec of the producer: "pickle" or "json"
    codec: str = "pickle"
    #: seconds a batch may sit unrefreshed in a node's hands before others reclaim it
    visibility_timeout: float = 60.0
    #: deliveries of one batch (first + reclaims) before it is dead-lettered
    max_deliveries: int = 5
    #: seconds between heartbeats (lease refresh, node record)
    heartbeat_interval: float = 5.0
    #: multiprocessing start method of the node's pool
    start_method: str = field(default_factory=default_start_method)
    #: longest single blocking read, in seconds
    block_seconds: float = 2.0
    #: exit once the queues are empty and nothing is in flight
    burst: bool = False
    #: seconds a stopping node spends finishing its batches before it hands the rest back
    grace_period: float = 30.0
    #: chunks a pool process runs before the node replaces it (None: never), like
    #: ProcessPoolExecutor's max_tasks_per_child (worker.pool.pool_feed)
    max_tasks_per_child: int | None = None
    #: folders added to sys.path of a node and its pool, so it can import task modules
    paths: tuple[str, ...] = (".",)
    #: node name; None: host-pid-random
    node_name: str | None = None
    #: port of the node's Prometheus metrics server; None: no server (0: any free port)
    metrics_port: int | None = None
    #: address the metrics server binds
    metrics_host: str = "0.0.0.0"
    #: shared secrets (taskfan.signing): the first signs, any verifies; () signs nothing
    secrets: tuple[str, ...] = field(default=(), repr=False)
    #: refuse pickle: producers use json and read no pickle job, nodes refuse pickle batches
    no_pickle: bool = False
    #: module prefixes a node may import task functions from; (): any
    allow: tuple[str, ...] = ()
    #: with an allowlist, also run functions sent by value (code shipped through
    #: Redis, outside the allowlist: docs/security.md); without one, pickle decides
    allow_by_value: bool = False
    #: bytes one encoded item (or one item's result) may take
    max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES
    #: bytes one encoded batch payload (or one batch's result entry) may take
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    #: bytes the items of the batches a node holds may take decoded, by the estimate of
    #: taskfan.limits.decoded_size; None: 16 times max_batch_bytes
    max_decoded_bytes: int | None = None
    #: RQ queues a node drains (docs/rq.md), in priority order
    rq_queues: tuple[str, ...] = ()
    #: RQ serializer of those queues: "pickle" (RQ's default), "json" or "module.Name"
    rq_serializer: str | None = None
    #: the operator says that serializer never unpickles (a secret or no_pickle allows it)
    rq_serializer_trusted: bool = False
    #: also move due jobs of RQ's scheduled registries to their queues (rq --with-scheduler)
    rq_with_scheduler: bool = False

    def __post_init__(self) -> None:
        self._check_text()
        self._check_queues()
        self._check_values()
        for secret in self.secrets:
            check_secret(secret)
        if self.no_pickle and self.codec == "pickle":
            object.__setattr__(self, "codec", "json")  # no_pickle wins over the default codec
        for prefix in self.allow:
            check_allow_prefix(prefix)
        problem = check_limits(self.max_item_bytes, self.max_batch_bytes)
        if self.max_decoded_bytes is not None:
            problem = problem or count_problem(
                "max_decoded_bytes", self.max_decoded_bytes, 1, MiB**3
            )
        if problem:
            raise ConfigError(problem)
        if self.start_method not in multiprocessing.get_all_start_methods():
            raise ConfigError(
                f"start_method {self.start_method!r} is not available here: choose one of "
                f"{', '.join(multiprocessing.get_all_start_methods())}"
            )

    def _check_text(self) -> None:
        """Names that reach Redis, a log line or a host lookup are UTF-8 text
        (paths and secrets need not be; the Redis URL is checked where it is
        parsed, ``taskfan.urls``, which hides its password)."""
        texts = {
            "node_name": (self.node_name,),
            "metrics_host": (self.metrics_host,),
            "rq_serializer": (self.rq_serializer,),
            "rq_queues": self.rq_queues,
        }
        for name, values in texts.items():
            for value in values:
                problem = not_utf8(value) if value is not None else None
                if problem:
                    raise ConfigError(f"{name} {value!r}: {problem}")

    def _check_queues(self) -> None:
        if not self.queues and not self.rq_queues:
            raise ConfigError("at least one queue is needed")
        if self.rq_serializer is not None and not self.rq_serializer.strip():
            raise ConfigError(
                "rq_serializer is empty: name a serializer (json, pickle or module.Name), "
                "or leave it out for RQ's default (pickle)"
            )
        for name in self.rq_queues:
            if not name or any(c.isspace() for c in name):
                raise ConfigError(f"invalid RQ queue name {name!r}: use a name without whitespace")
        for name in self.queues:
            try:
                QueueKeys(name)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None

    def _check_values(self) -> None:
        """Numbers in range, and a known codec."""
        # Each reaches a wait, a deadline or an allocation: bounded (taskfan.bounds).
        counts = {
            "processes": (self.processes, MAX_PROCESSES),
            "chunksize": (self.chunksize, MAX_COUNT),
            "batch_size": (self.batch_size, MAX_COUNT),
            "max_deliveries": (self.max_deliveries, MAX_COUNT),
            "max_tasks_per_child": (self.max_tasks_per_child, MAX_COUNT),
        }
        problems = [
            count_problem(name, value, 1, most)
            for name, (value, most) in counts.items()
            if value is not None
        ]
        problems.append(count_problem("result_ttl", self.result_ttl, 0, MAX_RESULT_TTL))
        problems.append(count_problem("max_entry_age", self.max_entry_age, 0, MAX_RESULT_TTL))
        problems.append(seconds_problem("grace_period", self.grace_period, MAX_LEASE))
        for name, most in (
            ("visibility_timeout", MAX_LEASE),
            ("heartbeat_interval", MAX_LEASE),
            ("block_seconds", MAX_BLOCK),
        ):
            problems.append(seconds_problem(name, getattr(self, name), most, zero=False))
        problem = next((p for p in problems if p), None)
        if problem:
            raise ConfigError(problem)
        if self.codec not in CODECS:
            raise ConfigError(f"codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        low, high = ENQUEUE_LEASE_BOUNDS
        if not low <= self.enqueue_lease <= high:
            raise ConfigError(
                f"enqueue_lease must be between {low:g} and {high:g} seconds, "
                f"got {self.enqueue_lease}"
            )
        if self.heartbeat_interval * 2 > self.visibility_timeout:
            raise ConfigError(
                f"heartbeat_interval ({self.heartbeat_interval}s) must be at most half the "
                f"visibility_timeout ({self.visibility_timeout}s), or leases lapse"
            )
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(
                f"metrics_port must be a port number (0-65535), got {self.metrics_port}"
            )

    @property
    def decoded_limit(self) -> int:
        """max_decoded_bytes, or its default."""
        if self.max_decoded_bytes is not None:
            return self.max_decoded_bytes
        return default_max_decoded(self.max_batch_bytes)

    @property
    def entry_age_limit(self) -> int:
        """Seconds after which a signed batch entry is refused (``max_entry_age``)."""
        return self.max_entry_age or self.result_ttl or DEFAULT_RESULT_TTL

    @property
    def queue(self) -> str:
        """The queue a producer enqueues on."""
        return self.queues[0]

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Build settings from ``TASKFAN_*`` variables; ``overrides`` that are not None win."""
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        if environ.get("TASKFAN_SECRET") and environ.get("TASKFAN_SECRET_FILE"):
            raise ConfigError("set TASKFAN_SECRET or TASKFAN_SECRET_FILE, not both")
        for var, (name, parse) in ENV.items():
            text = environ.get(var)
            if text is None or text == "":
                continue
            shown = "***" if var in SECRET_ENV else repr(text)  # never print a secret
            try:
                values[name] = parse(text)
            except (ValueError, ConfigError) as exc:
                raise ConfigError(f"environment variable {var}={shown}: {exc}") from None
            sources[name] = f"environment variable {var}={shown}"
        given = {k: v for k, v in overrides.items() if v is not None}
        values.update(given)
        if values.get("rq_queues") and "queues" not in values:
            values["queues"] = ()  # a node given RQ queues serves taskfan queues only when named
        try:
            return cls(**values)
        except ConfigError as exc:
            # Name the variable when the bad value came from the environment.
            from_env = [
                src for name, src in sources.items() if name not in given and name in str(exc)
            ]
            if from_env:
                raise ConfigError(f"{from_env[0]}: {exc}") from None
            raise


ENV.update(
    {
        "TASKFAN_REDIS_URL": ("redis_url", str),
        "TASKFAN_QUEUE": ("queues", _split),
        "TASKFAN_PROCESSES": ("processes", int),
        "TASKFAN_CHUNKSIZE": ("chunksize", int),
        "TASKFAN_BATCH_SIZE": ("batch_size", int),
        "TASKFAN_RESULT_TTL": ("result_ttl", int),
        "TASKFAN_MAX_ENTRY_AGE": ("max_entry_age", int),
        "TASKFAN_ENQUEUE_LEASE": ("enqueue_lease", float),
        "TASKFAN_CODEC": ("codec", str),
        "TASKFAN_VISIBILITY_TIMEOUT": ("visibility_timeout", float),
        "TASKFAN_HEARTBEAT_INTERVAL": ("heartbeat_interval", float),
        "TASKFAN_MAX_DELIVERIES": ("max_deliveries", int),
        "TASKFAN_START_METHOD": ("start_method", str),
        "TASKFAN_BLOCK_SECONDS": ("block_seconds", float),
        "TASKFAN_BURST": ("burst", _flag),
        "TASKFAN_GRACE_PERIOD": ("grace_period", float),
        "TASKFAN_MAX_TASKS_PER_CHILD": ("max_tasks_per_child", int),
        "TASKFAN_PATH": ("paths", lambda text: tuple(text.split(os.pathsep))),
        "TASKFAN_NODE_NAME": ("node_name", str),
        "TASKFAN_METRICS_PORT": ("metrics_port", int),
        "TASKFAN_METRICS_HOST": ("metrics_host", str),
        "TASKFAN_SECRET": ("secrets", _secrets),
        "TASKFAN_SECRET_FILE": ("secrets", read_secret_file),
        "TASKFAN_NO_PICKLE": ("no_pickle", _flag),
        "TASKFAN_ALLOW": ("allow", _split),
        "TASKFAN_ALLOW_BY_VALUE": ("allow_by_value", _flag),
        "TASKFAN_MAX_ITEM_BYTES": ("max_item_bytes", parse_size),
        "TASKFAN_MAX_BATCH_BYTES": ("max_batch_bytes", parse_size),
        "TASKFAN_MAX_DECODED_BYTES": ("max_decoded_bytes", parse_size),
        "TASKFAN_RQ_QUEUE": ("rq_queues", _split),
        "TASKFAN_RQ_SERIALIZER": ("rq_serializer", str),
        "TASKFAN_RQ_WITH_SCHEDULER": ("rq_with_scheduler", _flag),
        "TASKFAN_RQ_SERIALIZER_TRUSTED": ("rq_serializer_trusted", _flag),
    }
)
#: variables whose value is never shown in a message
SECRET_ENV = {"TASKFAN_SECRET"}
