"""Every touch of RQ's internals, in one place: RQ 2.12.0 exactly (pinned).

A taskfan node drains RQ queues in batches (``worker.rq_source``) and must leave
RQ's records exactly as RQ's own worker would: job hashes, ``Result`` streams,
executions, the started/finished/failed/scheduled registries, the worker's hash.
This module knows RQ's key names, field formats and code paths; the rest of
taskfan talks to it in plain terms (job ids, outcomes, leases). The Lua scripts
in ``worker/rq_lua`` belong to it: each mirrors one step of RQ's worker for many
jobs per call, which is what makes a node tens of times faster than RQ's own.

Two paths record an outcome:

- the common case (a job that succeeded and keeps its result, or failed with no
  retries left) goes through ``finish.lua``, many jobs per call;
- every other case (``result_ttl=0``, ``failure_ttl=0``, retries left, a
  ``Retry`` returned, a job hash not written by RQ 2.x, a cold stop) goes
  through RQ's own ``SimpleWorker`` methods on a worker object named like the
  node, so it is RQ's code that writes.

``tests/test_rq_contract.py`` runs the same jobs through RQ's ``SimpleWorker``
and through a node and compares what each leaves in Redis. Upgrading RQ means:
change the pin, rerun those tests, adapt this module.

``run_job`` runs in the pool processes: one RQ job, with RQ's timeout (SIGALRM
raising ``JobTimeoutException``), RQ's ``get_current_job()`` and RQ's traceback
text, and the return value serialized with the queue's serializer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import struct
import sys
import time
import traceback
import zlib
from base64 import b64decode, b64encode
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from typing import Any

import redis
import rq
from redis.commands.core import Script
from rq import worker_registration
from rq.defaults import DEFAULT_FAILURE_TTL, DEFAULT_RESULT_TTL, UNSERIALIZABLE_RETURN_VALUE_PAYLOAD
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.executions import Execution, ExecutionRegistry
from rq.group import Group
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus, Retry, _job_stack
from rq.queue import Queue
from rq.registry import (
    FailedJobRegistry,
    FinishedJobRegistry,
    StartedJobRegistry,
    clean_registries,
)
from rq.results import Result
from rq.scheduler import RQScheduler
from rq.serializers import Serializer, resolve_serializer
from rq.suspension import WORKERS_SUSPENDED
from rq.timeouts import JobTimeoutException
from rq.utils import current_timestamp, import_attribute, parse_timeout, utcformat
from rq.worker import SimpleWorker, WorkerStatus

from taskfan.errors import ConfigError, FunctionNotAllowed
from taskfan.refs import module_allowed

log = logging.getLogger(__name__)

PINNED = "2.12.0"
#: what the pool runs for each RQ job (``run_job`` below)
RUN_JOB = "worker.rq_adapter:run_job"
#: outcome kinds ``run_job`` returns
OK, FAILED, RETRY = "ok", "failed", "retry"
#: the job hash fields a pool process gets: what it needs to run the job (data,
#: timeout) and to answer get_current_job() (origin, description, meta, retry counts;
#: times are left out: parsing them costs more than many a job)
CHILD_FIELDS = (
    b"data", b"timeout", b"origin", b"description", b"meta", b"number_of_retries",
    b"retries_left",
)  # fmt: skip
#: ... and the fields the node reads besides, to route each job (the last two: to
#: know the hash has what RQ 2.x's Job.to_dict always writes, see RqJob.fast)
FETCHED = (
    *CHILD_FIELDS, b"result_ttl", b"failure_ttl", b"success_callback_name",
    b"failure_callback_name", b"stopped_callback_name", b"webhooks", b"repeats_left",
    b"created_at", b"group_id",
)  # fmt: skip
_INDEX = {name: i for i, name in enumerate(FETCHED)}
#: the most jobs one script call handles: a call blocks every other Redis client
#: while it runs (about 20 ms for 250 jobs)
SCRIPT_JOBS = 250
#: the fetched fields RQ 2.x's Job.to_dict always writes (the others it always
#: writes, the node writes itself: status, started_at, ended_at, last_heartbeat,
#: worker_name)
_ALWAYS = (
    b"data", b"created_at", b"group_id", b"success_callback_name", b"failure_callback_name",
    b"stopped_callback_name",
)  # fmt: skip
_LENGTH = struct.Struct(">i")


def check_version() -> None:
    if rq.__version__ != PINNED:
        raise ConfigError(
            f"taskfan's RQ adapter is written for rq=={PINNED}, but rq {rq.__version__} is "
            f"installed: pip install 'rq=={PINNED}'"
        )


def check_trust(serializer_name: str | None, signed: bool, no_pickle: bool) -> None:
    """Refuse RQ queues whose jobs a node's security settings say not to run.

    RQ jobs carry no signature, and with RQ's default serializer their data is a
    pickle, which runs code as it loads: a node that runs only signed batches
    (a secret) or refuses pickle (--no-pickle) would let anyone who can write to
    Redis run code through them. It may drain RQ queues whose serializer is not
    pickle (e.g. json); --allow then limits the functions their jobs may call.
    """
    if serializer_name not in (None, "pickle", "rq.serializers.DefaultSerializer"):
        return
    if signed or no_pickle:
        why = "runs only signed batches (a secret)" if signed else "refuses pickle (--no-pickle)"
        raise ConfigError(
            f"this node {why}, but RQ jobs are not signed and the RQ queues use RQ's "
            "pickle serializer, whose data runs code as it loads: anyone who can write to "
            "Redis could run code through them. Drain queues enqueued with RQ's "
            "JSONSerializer (--rq-serializer json, with --allow), or drain these on a node "
            "without a secret or --no-pickle (docs/rq.md#security)"
        )


def serializer(name: str | None) -> Serializer:
    try:
        return resolve_serializer(name)
    except Exception as exc:
        raise ConfigError(f"RQ serializer {name!r}: {exc}") from None


_second_text: tuple[int, str] = (-1, "")


def now_text(ts: float) -> str:
    """An epoch time in RQ's text format (``rq.utils.utcformat``), cheaply: the
    text up to the second is computed once per second."""
    global _second_text
    second = int(ts)
    if _second_text[0] != second:
        text = utcformat(datetime.fromtimestamp(second, timezone.utc))
        _second_text = (second, text[: text.index(".")])
    micros = round((ts - second) * 1_000_000)
    if micros >= 1_000_000:  # rounding up into the next second
        return utcformat(datetime.fromtimestamp(ts, timezone.utc))
    return f"{_second_text[1]}.{micros:06d}Z"


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class QueueKeys:
    """The keys of one RQ queue, as RQ names them."""

    name: str

    @property
    def queue(self) -> str:
        return Queue.redis_queue_namespace_prefix + self.name

    @property
    def intermediate(self) -> str:
        return IntermediateQueue.get_intermediate_queue_key(self.queue)

    def first_seen(self, job_id: str) -> str:
        return f"{self.intermediate}:first_seen:{job_id}"

    @property
    def started(self) -> str:
        return StartedJobRegistry.key_template.format(self.name)

    @property
    def finished(self) -> str:
        return FinishedJobRegistry.key_template.format(self.name)

    @property
    def failed(self) -> str:
        return FailedJobRegistry.key_template.format(self.name)


def _job_key(job_id: str) -> str:
    return Job.key_for(job_id)


def _affixes(template: str) -> tuple[str, str]:
    """A key built by RQ around the id "\0", as (before, after): scripts build
    per-job keys from these (RQ's keys are not cluster-safe anyway: RQ does not
    support Redis Cluster), so that each job costs two arguments, not six keys."""
    before, _, after = template.partition("\0")
    return before, after


#: the affixes of a job's keys, in the order the scripts take them (ARGV[1..14])
_JOB_AFFIXES = [
    part
    for template in (
        Job.key_for("\0"),
        Result.get_key("\0"),
        "rq:execution:\0:",  # + execution id: rq.executions.Execution.key
        ExecutionRegistry.key_template.format("\0"),
        Job.dependents_key_for("\0"),
        f"{Job.redis_job_namespace_prefix}:\0:dependencies",  # Job.dependencies_key (sic)
    )
    for part in _affixes(template)
]


def worker_key(name: str) -> str:
    return SimpleWorker.redis_worker_namespace_prefix + name


# --------------------------------------------------------------------------- scripts


def _script(name: str, prelude: bool = True) -> Script:
    folder = resources.files("worker") / "rq_lua"
    text = (folder / f"{name}.lua").read_bytes()
    if prelude:
        text = (folder / "_keys.lua").read_bytes() + text
    return Script(None, text)  # type: ignore[arg-type]


_DEQUEUE = _script("dequeue")
_RELEASE = _script("release", prelude=False)
_START, _FINISH, _REFRESH = map(_script, ("start", "finish", "refresh"))


def _run(client: redis.Redis, script: Script, keys: list[str], args: list[Any]) -> Any:
    return script(keys=keys, args=args, client=client)


def check_server(client: redis.Redis) -> None:
    """RQ 2's intermediate list needs LMOVE: Redis 6.2 or later."""
    version = str(client.info("server").get("redis_version", "0"))
    if tuple(int(p) for p in version.split(".")[:2]) < (6, 2):
        raise ConfigError(f"draining RQ queues needs Redis 6.2 or later (LMOVE); found {version}")


# --------------------------------------------------------------------------- jobs


@dataclass(eq=False)
class RqJob:
    """One dequeued RQ job, as the node tracks it."""

    id: str
    queue: str
    #: the FETCHED fields of its hash when dequeued (a missing field: None)
    fields: tuple[bytes | None, ...]
    execution_id: str = field(default_factory=lambda: os.urandom(16).hex())  #: as uuid4().hex
    #: why taskfan will not run it (then it fails without running), if so
    unsupported: str | None = None
    #: when the node recorded its start (the Execution's created_at), once started
    started: float | None = None

    @property
    def member(self) -> str:
        return f"{self.id}:{self.execution_id}"  # Execution.composite_key

    def get(self, name: bytes) -> bytes | None:
        return self.fields[_INDEX[name]]

    def _int(self, name: bytes) -> int | None:
        value = self.get(name)
        return int(value) if value else None

    @property
    def result_ttl(self) -> int:
        ttl = self._int(b"result_ttl")
        return DEFAULT_RESULT_TTL if ttl is None else ttl

    @property
    def failure_ttl(self) -> int | None:
        return self._int(b"failure_ttl")

    def fast(self, kind: str) -> bool:
        """Whether finish.lua may record this outcome (else RQ's own code does)."""
        data = self.fields[0]
        if not data or not data.startswith(b"x"):
            return False  # RQ's worker would write it back zlib-compressed (0x78...)
        if any(self.get(name) is None for name in _ALWAYS):
            return False  # RQ's worker would add the fields its Job.to_dict always writes
        if kind == OK:
            return self.result_ttl > 0 or self.result_ttl == -1
        if kind == FAILED:
            ttl = self.failure_ttl
            return (ttl is None or ttl > 0 or ttl == -1) and not self._int(b"retries_left")
        return False

    def item(self, serializer_name: str | None, allow: tuple[str, ...] = ()) -> tuple[Any, ...]:
        """What the pool process gets: see ``run_job``."""
        return (self.id, self.fields[: len(CHILD_FIELDS)], serializer_name, allow)


def describe(queue: str, job_id: str, fields: Sequence[bytes | None]) -> RqJob:
    """An RqJob from its hash's FETCHED fields, with the reason taskfan will not run
    it, if any."""
    job = RqJob(job_id, queue, tuple(fields))
    reasons = []
    for name, option in (
        (b"success_callback_name", "on_success"),
        (b"failure_callback_name", "on_failure"),
        (b"stopped_callback_name", "on_stopped"),
    ):
        value = job.get(name)
        if value:
            reasons.append(f"a callback ({option}={value.decode(errors='replace')})")
    if job.get(b"webhooks"):
        reasons.append("webhooks")
    if job.get(b"repeats_left"):
        reasons.append("repeats (Repeat)")
    if reasons:
        job.unsupported = (
            f"taskfan.UnsupportedRQJob: taskfan does not run RQ jobs with {' and '.join(reasons)} "
            f"(job {job_id}, queue {queue}): run this queue with RQ's own `rq worker`, or "
            "enqueue the job without them. See taskfan's docs/rq.md."
        )
    return job


# --------------------------------------------------------------------------- the pool side


class _NoRedis:
    """The connection of a job running in a pool process, which has none."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(
            f"a job run by taskfan has no Redis connection (it called {name}() through its "
            "RQ job, e.g. get_current_job().save_meta()): run jobs that write to Redis "
            "through RQ with RQ's own `rq worker` (taskfan's docs/rq.md)"
        )


_NO_REDIS = _NoRedis()


class _CurrentJob(Job):
    """What get_current_job() returns in a job taskfan runs: RQ's Job, restored from
    the job's hash fields when first used (restoring costs more than many a job)."""

    def __init__(self, job_id: str, values: Sequence[bytes | None], ser: Serializer) -> None:
        # Job.__init__ runs in _restore; until then every attribute is missing
        object.__setattr__(self, "_lazy", (job_id, values, ser))

    def _restore(self) -> None:
        job_id, values, ser = self.__dict__.pop("_lazy")
        Job.__init__(self, job_id, connection=_NO_REDIS)  # type: ignore[arg-type]
        self.serializer = ser
        self.restore({k: v for k, v in zip(CHILD_FIELDS, values, strict=True) if v is not None})

    def __getattr__(self, name: str) -> Any:
        if "_lazy" not in self.__dict__:
            raise AttributeError(name)
        self._restore()
        return getattr(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_lazy" in self.__dict__:
            self._restore()
        object.__setattr__(self, name, value)


_serializers: dict[str | None, Serializer] = {}
_functions: dict[str, Any] = {}
#: the timeout of the running job, for the SIGALRM handler
_timeout: int = 0


def _on_alarm(signum: int, frame: Any) -> None:
    # rq.timeouts.UnixSignalDeathPenalty.handle_death_penalty, word for word
    raise JobTimeoutException(f"Task exceeded maximum timeout value ({_timeout} seconds)")


def _execute(data: bytes, ser: Serializer, allow: tuple[str, ...]) -> Any:
    """Job.restore's reading of ``data``, then Job._execute (Job.func included);
    with ``allow``, the function must come from those modules (checked before its
    module is imported, and again on the function found)."""
    with contextlib.suppress(zlib.error):  # else stored uncompressed
        data = zlib.decompress(data)
    try:
        func_name, instance, args, kwargs = ser.loads(data)
    except Exception as exc:
        raise DeserializationError() from exc
    if func_name is None:
        raise ValueError("Cannot execute job: function is None")
    if instance:
        if allow:
            kind = type(instance)
            _check_allowed(f"{kind.__module__}.{kind.__qualname__}.{func_name}", allow)
        func = getattr(instance, func_name)
    else:
        _check_allowed(func_name, allow)
        func = _functions.get(func_name)
        if func is None:
            func = _functions[func_name] = import_attribute(func_name)
        if allow:  # where the function found was defined, not just where it was found
            defined = getattr(func, "__qualname__", func_name.rpartition(".")[2])
            _check_allowed(f"{getattr(func, '__module__', '')}.{defined}", allow)
    result = func(*args, **kwargs)
    if asyncio.iscoroutine(result):
        return asyncio.new_event_loop().run_until_complete(result)
    return result


def _check_allowed(dotted: str, allow: tuple[str, ...]) -> None:
    """--allow for an RQ function name (RQ's "module.function" path)."""
    if allow and (
        not module_allowed(dotted, allow) or any(p.startswith("__") for p in dotted.split("."))
    ):
        raise FunctionNotAllowed(
            f"{dotted!r} is not allowed on this node: it is outside its allowlist "
            f"({', '.join(allow)}; --allow, TASKFAN_ALLOW)"
        )


def run_job(item: tuple[Any, ...]) -> tuple[Any, ...]:
    """Run one RQ job as RQ's ``perform_job`` does; never raises.

    ``item``: the job id, the CHILD_FIELDS of its hash, the serializer's name,
    the node's allowlist.
    Returns ``(kind, payload, started, ended, retry)``: for OK the base64 of the
    serialized return value (None when it returned None); for FAILED RQ's
    exception text; for RETRY (it returned an ``rq.Retry``) ``retry`` holds its
    max, intervals and enqueue_at_front. The timeout is RQ's
    (UnixSignalDeathPenalty): SIGALRM raises JobTimeoutException in the job.
    """
    global _timeout
    job_id, values, serializer_name, allow = item
    started = time.time()
    try:
        ser = _serializers.get(serializer_name)
        if ser is None:
            ser = _serializers[serializer_name] = resolve_serializer(serializer_name)
        _timeout = parse_timeout(values[1]) or Queue.DEFAULT_TIMEOUT
        if signal.getsignal(signal.SIGALRM) is not _on_alarm:  # a taskfan chunk set its own
            signal.signal(signal.SIGALRM, _on_alarm)
        _job_stack.push(_CurrentJob(job_id, values, ser))
        started = time.time()
        signal.alarm(_timeout)
        try:
            value = _execute(values[0], ser, allow)
        finally:
            signal.alarm(0)
            _job_stack.pop()
        ended = time.time()
    except BaseException:  # as RQ: whatever the job raised, SystemExit included
        ended = time.time()
        return (FAILED, "".join(traceback.format_exception(*sys.exc_info())), started, ended, None)
    if isinstance(value, Retry):
        return (RETRY, None, started, ended, (value.max, value.intervals, value.enqueue_at_front))
    return (OK, _payload(value, ser), started, ended, None)


def _payload(value: Any, ser: Serializer) -> str | None:
    """Result.serialize's return_value field."""
    if value is None:
        return None
    try:
        data = ser.dumps(value)
    except Exception:
        data = ser.dumps(UNSERIALIZABLE_RETURN_VALUE_PAYLOAD)
    return b64encode(data).decode()


# --------------------------------------------------------------------------- the node side


def dequeue(
    client: redis.Redis, keys: QueueKeys, count: int, moved: Sequence[str] = ()
) -> list[tuple[str, tuple[bytes | None, ...] | None]]:
    """Move up to ``count`` job ids from the queue to its intermediate list; returns
    them (after ``moved``, ids moved already) with the FETCHED fields of their hash,
    or None for a job whose hash is gone (its id left the intermediate list)."""
    found: list[tuple[str, tuple[bytes | None, ...] | None]] = []
    while True:
        step = min(count, SCRIPT_JOBS)
        args: list[Any] = [*_JOB_AFFIXES, step, len(moved), *moved, *FETCHED]
        reply = _run(client, _DEQUEUE, [keys.queue, keys.intermediate], args)
        found += [
            (reply[i].decode(), _unpack(reply[i + 1]) if reply[i + 1] else None)
            for i in range(0, len(reply), 2)
        ]
        count -= step
        if count <= 0 or len(reply) // 2 < step + len(moved):
            return found  # done, or the queue ran dry
        moved = ()


def _unpack(blob: bytes) -> tuple[bytes | None, ...]:
    """dequeue.lua's packing: (4-byte length, bytes)*, length -1 for a missing field."""
    out: list[bytes | None] = []
    at, end = 0, len(blob)
    while at < end:
        (length,) = _LENGTH.unpack_from(blob, at)
        at += 4
        if length < 0:
            out.append(None)
        else:
            out.append(blob[at : at + length])
            at += length
    return tuple(out)


def dequeue_blocking(client: redis.Redis, keys: QueueKeys, timeout: float) -> str | None:
    """Wait up to ``timeout`` seconds for one job id (BLMOVE, as RQ's Queue.lmove);
    ``dequeue(..., moved=[it])`` then reads its fields."""
    seconds: Any = timeout  # redis-py's hint says int; Redis takes fractions
    found: Any = client.blmove(keys.queue, keys.intermediate, seconds, "LEFT", "RIGHT")
    return found.decode() if found is not None else None


def suspended(client: redis.Redis) -> bool:
    """``rq suspend`` is in force: RQ's workers take no new jobs, and neither do we."""
    return bool(client.exists(WORKERS_SUSPENDED))


def drop(client: redis.Redis, keys: QueueKeys, ids: Iterable[str]) -> None:
    """Take ids of jobs that no longer exist out of the intermediate list."""
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.lrem(keys.intermediate, 1, job_id)
    pipe.execute()


def start(
    client: redis.Redis, worker: str, keys: QueueKeys, jobs: Sequence[RqJob], lease: int, now: float
) -> list[int]:
    """Mark jobs started (start.lua); returns its code per job."""
    if len(jobs) > SCRIPT_JOBS:
        return [
            code
            for at in range(0, len(jobs), SCRIPT_JOBS)
            for code in start(client, worker, keys, jobs[at : at + SCRIPT_JOBS], lease, now)
        ]
    args: list[Any] = [
        *_JOB_AFFIXES,
        worker,
        repr(now),
        now_text(now),
        lease,
        int(now) + lease,
        int(now) + lease + 60,
    ]
    for job in jobs:
        args += [job.id, job.execution_id]
    script_keys = [keys.started, keys.intermediate, worker_key(worker)]
    return [int(c) for c in _run(client, _START, script_keys, args)]


def refresh(
    client: redis.Redis, keys: QueueKeys, jobs: Sequence[RqJob], lease: int, now: float
) -> list[int]:
    """Renew the started-registry leases of running jobs (refresh.lua)."""
    if len(jobs) > SCRIPT_JOBS:
        return [
            code
            for at in range(0, len(jobs), SCRIPT_JOBS)
            for code in refresh(client, keys, jobs[at : at + SCRIPT_JOBS], lease, now)
        ]
    args: list[Any] = [
        *_JOB_AFFIXES,
        repr(now),
        now_text(now),
        lease,
        int(now) + lease,
        int(now) + lease + 60,
    ]
    for job in jobs:
        args += [job.id, job.execution_id]
    return [int(c) for c in _run(client, _REFRESH, [keys.started], args)]


def keep_held(client: redis.Redis, keys: QueueKeys, ids: Sequence[str]) -> None:
    """The lease of dequeued jobs not started yet: clear the markers that RQ's
    intermediate-list cleanup (and ``recover_stuck``) set on jobs they see there."""
    for at in range(0, len(ids), 1000):
        client.delete(*(keys.first_seen(i) for i in ids[at : at + 1000]))


def release(client: redis.Redis, keys: QueueKeys, ids: Sequence[str]) -> int:
    """Put dequeued, never started jobs back at the head of their queue, in order."""
    if not ids:
        return 0
    script_keys = [keys.queue, keys.intermediate, *(keys.first_seen(i) for i in ids)]
    return int(_run(client, _RELEASE, script_keys, list(ids)))


@dataclass(frozen=True)
class Outcome:
    """What ``run_job`` returned for a job (or what the node says about it)."""

    kind: str
    payload: str | None
    started: float
    ended: float
    retry: tuple[int, list[int], bool] | None = None


def finish(
    client: redis.Redis,
    worker: str,
    keys: QueueKeys,
    done: Sequence[tuple[RqJob, Outcome]],
    now: float,
) -> tuple[list[int], list[str]]:
    """Record jobs for which ``RqJob.fast`` holds (finish.lua): returns a code per
    job (1 recorded, 0 its execution left the started registry) and the ids of
    recorded jobs that have dependents."""
    if len(done) > SCRIPT_JOBS:
        codes, dependents = [], []
        for at in range(0, len(done), SCRIPT_JOBS):
            more = finish(client, worker, keys, done[at : at + SCRIPT_JOBS], now)
            codes += more[0]
            dependents += more[1]
        return codes, dependents
    seconds = ",".join(repr(_working_seconds(outcome)) for _, outcome in done)
    args: list[Any] = [*_JOB_AFFIXES, worker, current_timestamp(), DEFAULT_FAILURE_TTL, seconds]
    for job, outcome in done:
        assert job.started is not None
        if outcome.kind == OK:
            kind, payload, ttl = "s", outcome.payload or "", str(job.result_ttl)
        else:
            text = (outcome.payload or "").encode()
            kind, payload = "f", b64encode(zlib.compress(text)).decode()
            ttl = "" if job.failure_ttl is None else str(job.failure_ttl)
        args += [
            kind,
            job.id,
            job.execution_id,
            now_text(outcome.started),
            now_text(outcome.ended),
            repr(job.started),
            repr(outcome.ended),
            payload,
            ttl,
        ]
    script_keys = [keys.started, keys.finished, keys.failed, worker_key(worker)]
    codes, dependents = _run(client, _FINISH, script_keys, args)
    return [int(c) for c in codes], [d.decode() for d in dependents]


def _working_seconds(outcome: Outcome) -> float:
    """What RQ adds to the worker's total_working_time: ended_at - started_at."""
    delta = _dt(outcome.ended) - _dt(outcome.started)
    return delta.total_seconds()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


# --------------------------------------------------------------------------- RQ's own code


class _Worker(SimpleWorker):
    """RQ's worker, as the node's stand-in in RQ's records. It never runs a job: the
    node uses it to register, heartbeat, and record the outcomes finish.lua leaves
    to RQ's own code."""

    def _set_connection(self, connection: redis.Redis) -> redis.Redis:
        return connection  # RQ would raise the socket timeout to 415 s for its BLMOVE


class RqWorker:
    """The node, as an RQ worker: registered, heartbeating, recording outcomes."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        queues: Sequence[str],
        serializer_name: str | None,
        ttl: int,
    ) -> None:
        self.client = client
        self.serializer = serializer(serializer_name)
        self.queues = {q: Queue(q, connection=client, serializer=self.serializer) for q in queues}
        self._worker = _Worker(
            list(self.queues.values()),
            name=name,
            connection=client,
            serializer=self.serializer,
            worker_ttl=ttl,
        )
        self._worker.log = log  # one INFO line per batch is the node's; RQ's go to debug
        self.name = name

    def register(self) -> None:
        try:
            self._worker.register_birth()
        except ValueError:
            raise ConfigError(
                f"an RQ worker named {self.name!r} is registered already (a node of that "
                "name runs, or died less than its worker TTL ago): choose another --name"
            ) from None
        self._worker.set_state(WorkerStatus.IDLE)

    def unregister(self) -> None:
        self._worker.register_death()

    def heartbeat(self, busy_job: str | None) -> None:
        """Renew the worker's hash (re-creating it if it expired meanwhile), and say
        whether it is busy and with which job."""
        worker = self._worker
        pipe = self.client.pipeline(transaction=False)
        worker.heartbeat(pipeline=pipe)
        self._state(pipe, busy_job)
        created = pipe.execute()[0]
        if created:  # the hash had expired (a long Redis outage): write it whole
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(worker.key, mapping=worker.serialize())
            worker_registration.register(worker, pipe)
            pipe.execute()

    def idle(self) -> None:
        """Nothing runs: as RQ's worker between jobs."""
        pipe = self.client.pipeline(transaction=False)
        self._state(pipe, None)
        pipe.execute()

    def _state(self, pipe: Any, busy_job: str | None) -> None:
        key = self._worker.key
        if busy_job is None:
            pipe.hset(key, "state", WorkerStatus.IDLE.value)
            pipe.hdel(key, "current_job")
        else:
            pipe.hset(key, mapping={"state": WorkerStatus.BUSY.value, "current_job": busy_job})

    def _job(self, job: RqJob) -> Job:
        """The job as RQ's worker holds it while it runs (its hash, read afresh)."""
        rq_job = Job.fetch(job.id, connection=self.client, serializer=self.serializer)
        rq_job.worker_name = self.name
        return rq_job

    def record(self, job: RqJob, outcome: Outcome) -> bool:
        """Record one outcome through RQ's own worker code; False when its execution
        left the started registry (its lease lapsed and RQ moved the job on)."""
        assert job.started is not None
        keys = QueueKeys(job.queue)
        if self.client.zscore(keys.started, job.member) is None:
            return False
        worker, queue = self._worker, self.queues[job.queue]
        try:
            rq_job = self._job(job)
        except NoSuchJobError:  # deleted while it ran: nothing left to record in
            return False
        rq_job.started_at, rq_job.ended_at = _dt(outcome.started), _dt(outcome.ended)
        rq_job.last_heartbeat = rq_job.ended_at
        execution = Execution(job.execution_id, job.id, self.client, worker_name=self.name)
        execution.created_at = execution.last_heartbeat = _dt(job.started)
        worker.execution = execution
        registry = queue.started_job_registry
        try:
            if outcome.kind == OK:
                rq_job._status = JobStatus.FINISHED
                rq_job._result = (
                    None
                    if outcome.payload is None
                    else self.serializer.loads(b64decode(outcome.payload))
                )
                worker.handle_job_success(rq_job, queue, registry)
            elif outcome.kind == RETRY:
                assert outcome.retry is not None
                maximum, intervals, at_front = outcome.retry
                retry = Retry(maximum, interval=intervals, enqueue_at_front=at_front)
                rq_job._result = retry  # RQ saves it with the requeued job (field "result")
                worker.handle_job_retry(rq_job, queue, retry, registry, execution)
            else:
                rq_job._status = JobStatus.FAILED
                worker.handle_job_failure(rq_job, queue, registry, outcome.payload or "")
        finally:
            worker.execution = None
        return True

    def fail_unstarted(self, job: RqJob, reason: str) -> None:
        """Fail a job that will not run (unsupported), for good: no retries."""
        worker, queue = self._worker, self.queues[job.queue]
        try:
            rq_job = self._job(job)
        except NoSuchJobError:
            drop(self.client, QueueKeys(job.queue), [job.id])
            return
        rq_job.retries_left = None  # so RQ does not retry it; the hash keeps its value
        rq_job.ended_at = _dt(time.time())
        worker.execution = None
        worker.handle_job_failure(rq_job, queue, exc_string=reason)
        drop(self.client, QueueKeys(job.queue), [job.id])

    def enqueue_dependents(self, queue: str, job_ids: Iterable[str]) -> None:
        """What RQ's worker does after a job ends: enqueue the jobs waiting for it."""
        for job_id in job_ids:
            try:
                job = Job.fetch(job_id, connection=self.client, serializer=self.serializer)
            except Exception as exc:  # e.g. deleted meanwhile
                log.warning("job %s: cannot enqueue its dependents: %s", job_id, exc)
                continue
            self.queues[queue].enqueue_dependents(job)


# --------------------------------------------------------------------------- maintenance


def recover_stuck(
    client: redis.Redis, keys: QueueKeys, grace: float, own: set[str], now: float
) -> int:
    """Requeue jobs stuck in the intermediate list: dequeued by a node (or RQ
    worker) that died before starting them. Returns how many went back.

    RQ's own cleanup (IntermediateQueue.cleanup) marks a job the first time it
    sees it there and fails it ("stuck in intermediate queue") a minute later;
    we use the same marker but put the job back, since it never ran. A live node
    clears the markers of the jobs it holds at every heartbeat (``keep_held``).
    """
    listed: Any = client.lrange(keys.intermediate, 0, -1)
    ids = [i.decode() for i in listed]
    if not ids:
        return 0
    members: Any = client.zrange(keys.started, 0, -1)
    running = {m.decode().split(":", 1)[0] for m in members}
    stuck = []
    for job_id in dict.fromkeys(ids):
        if job_id in running or job_id in own:
            continue
        if not client.exists(_job_key(job_id)):
            client.lrem(keys.intermediate, 1, job_id)  # as RQ's cleanup does
            continue
        if client.set(keys.first_seen(job_id), now, nx=True, ex=24 * 3600):
            continue  # first seen now
        first = client.get(keys.first_seen(job_id))
        if first is not None and now - float(first) > grace:
            stuck.append(job_id)
    return release(client, keys, stuck)


def clean(client: redis.Redis, name: str, serializer_name: str | None) -> None:
    """RQ's periodic maintenance of a queue (BaseWorker.clean_registries): expired
    finished/failed entries go, jobs whose lease lapsed in the started registry fail
    with AbandonedJobError (or are retried), dead workers leave the registry. One
    worker or node at a time, under RQ's maintenance lock."""
    queue = Queue(name, connection=client, serializer=serializer(serializer_name))
    if not queue.acquire_maintenance_lock():
        return
    try:
        clean_registries(queue)
        worker_registration.clean_worker_registry(queue)
    finally:
        queue.release_maintenance_lock()
    Group.clean_registries(connection=client)


class Scheduler:
    """RQ's scheduler duty (``rq worker --with-scheduler``): move due jobs of the
    scheduled registries (e.g. retries with an interval) to their queues."""

    def __init__(self, client: redis.Redis, queues: Sequence[str], serializer_name: str | None):
        self._scheduler = RQScheduler(
            list(queues), connection=client, serializer=serializer(serializer_name)
        )

    def start(self) -> None:
        self._scheduler.register_birth()
        self._scheduler.acquire_locks()

    def tick(self) -> None:
        scheduler = self._scheduler
        if scheduler.should_reacquire_locks:
            scheduler.acquire_locks()
        if scheduler.acquired_locks:
            scheduler.heartbeat()
            scheduler.enqueue_scheduled_jobs()

    def stop(self) -> None:
        self._scheduler.stop()
