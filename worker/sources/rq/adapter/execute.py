"""What runs in the node's pool processes: one RQ job, as RQ's ``perform_job`` runs it.

``run_job`` (the pool's function for RQ batches, ``RUN_JOB``) gets a job's id and
the CHILD_FIELDS of its hash, and runs it with RQ's timeout (SIGALRM raising
``JobTimeoutException``), RQ's ``get_current_job()`` (read-only: a pool process
has no Redis connection) and RQ's traceback text; the return value is
serialized with the queue's serializer. It never raises: the outcome is data.
"""

from __future__ import annotations

import contextlib
import inspect
import signal
import sys
import time
import traceback
import zlib
from _signal import getsignal as _raw_getsignal  # type: ignore[import-not-found]
from base64 import b64encode
from collections.abc import Sequence
from typing import Any

from rq.defaults import UNSERIALIZABLE_RETURN_VALUE_PAYLOAD
from rq.exceptions import DeserializationError
from rq.job import Job, Retry
from rq.queue import Queue
from rq.serializers import Serializer, resolve_serializer
from rq.timeouts import JobTimeoutException
from rq.utils import import_attribute, parse_timeout

from taskfan.errors import FunctionNotAllowed
from taskfan.refs import module_allowed
from worker.sources.rq.adapter.jobs import CHILD_FIELDS, FAILED, OK, RETRY
from worker.sources.rq.adapter.versions import enter_job, run_coroutine

#: what the pool runs for each RQ job (re-exported by the package: a stable name)
RUN_JOB = "worker.sources.rq.adapter:run_job"


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
#: a job hash's timeout field -> its seconds, as RQ reads it
_timeouts: dict[Any, int] = {}
#: the timeout of the running job, for the SIGALRM handler
_timeout: int = 0


#: the most signal.alarm takes (a C int); a longer timeout is as good as none
_MAX_ALARM = 2**31 - 1


def _parse_timeout(field: Any) -> int:
    if len(_timeouts) >= 1024:  # job hashes anyone wrote must not grow it without end
        _timeouts.clear()
    seconds = parse_timeout(field) or Queue.DEFAULT_TIMEOUT
    # Capped: a job hash anyone wrote must not overflow the alarm (taskfan.bounds).
    seconds = _timeouts[field] = min(seconds, _MAX_ALARM)
    return seconds


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
    except BaseException as exc:  # the job's data ran its own code while it loaded
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
    if inspect.iscoroutine(result):
        return run_coroutine(result)
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
        _timeout = _timeouts.get(values[1]) or _parse_timeout(values[1])
        # a taskfan chunk may have set its own handler. (_signal's getsignal: signal's
        # converts to an enum, raising and catching a ValueError for a function.)
        if _raw_getsignal(signal.SIGALRM) is not _on_alarm:
            signal.signal(signal.SIGALRM, _on_alarm)
        leave = enter_job(_CurrentJob(job_id, values, ser))  # for rq.get_current_job()
        started = time.time()
        signal.alarm(_timeout)
        try:
            value = _execute(values[0], ser, allow)
        finally:
            signal.alarm(0)
            leave()
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
    except BaseException:  # as RQ (Exception there), and what a __reduce__ may raise
        data = ser.dumps(UNSERIALIZABLE_RETURN_VALUE_PAYLOAD)
    return b64encode(data).decode()
