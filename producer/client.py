"""The producer's entry point: enqueue jobs on a queue, reattach to jobs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import redis

from producer import sizing
from producer.enqueue import Enqueuer, JobSpec
from producer.job import Job
from taskfan.codec import get_codec
from taskfan.connection import connect, translate_errors
from taskfan.errors import ConfigError
from taskfan.keys import QueueKeys
from taskfan.protocol import CallMode, TaskOptions
from taskfan.refs import reference
from taskfan.settings import DEFAULT_RESULT_TTL, Settings


class Client:
    """Enqueue jobs on one queue of one Redis.

    ``codec`` is "pickle" (any picklable value; nodes run pickle from Redis, so
    trust your Redis or sign) or "json" (JSON values only, never runs code).
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        queue: str = "default",
        *,
        codec: str = "pickle",
        batch_size: int | None = None,
        chunksize: int | None = None,
        result_ttl: int = DEFAULT_RESULT_TTL,
    ) -> None:
        try:
            QueueKeys(queue)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.redis = redis_client
        self.queue = queue
        self.codec = get_codec(codec)
        self.batch_size = _positive("batch_size", batch_size)
        self.chunksize = _positive("chunksize", chunksize)
        if result_ttl < 0:
            raise ConfigError(f"result_ttl must be 0 (keep forever) or more, got {result_ttl}")
        self.result_ttl = result_ttl
        self._costs = sizing.CostBoard(redis_client)

    @classmethod
    def from_url(cls, url: str, queue: str = "default", **options: Any) -> Client:
        return cls(connect(url), queue, **options)

    @classmethod
    def from_settings(cls, settings: Settings) -> Client:
        if settings.redis_url is None:
            raise ConfigError("no Redis configured: pass a URL or set TASKFAN_REDIS_URL")
        return cls(
            connect(settings.redis_url, block_seconds=settings.block_seconds),
            settings.queue,
            codec=settings.codec,
            batch_size=settings.batch_size,
            chunksize=settings.chunksize,
            result_ttl=settings.result_ttl,
        )

    @classmethod
    def from_env(cls, **overrides: Any) -> Client:
        """A client configured by ``TASKFAN_*`` variables (and ``overrides``)."""
        return cls.from_settings(Settings.from_env(os.environ, **overrides))

    def map(
        self,
        fn: Callable[..., Any] | str,
        iterable: Iterable[Any],
        *,
        batch_size: int | None = None,
        chunksize: int | None = None,
        star: bool = False,
        codec: str | None = None,
        result_ttl: int | None = None,
        mode: CallMode | None = None,
        timeout: float | None = None,
        hard_timeout: float | None = None,
        retries: int = 0,
        retry_on: Iterable[type[BaseException] | str] = (),
        backoff: float = 0.1,
    ) -> Job:
        """Enqueue ``fn`` over every item; returns once every batch is in Redis.

        ``star=True`` calls ``fn(*item)`` (like ``itertools.starmap``).
        ``batch_size`` is items per Redis entry, ``chunksize`` items per pool
        message on a node; both default to automatic.

        Per item: ``timeout`` (seconds; TimeoutError raised inside the task),
        ``hard_timeout`` (seconds; the node kills the process running the item
        and records it as failed), ``retries`` extra attempts after an
        exception, only for ``retry_on`` types (classes or names) when given,
        waiting ``backoff`` seconds, doubled per attempt, with jitter.
        """
        try:
            options = TaskOptions(
                timeout=timeout,
                hard_timeout=hard_timeout,
                retries=retries,
                retry_on=tuple(t if isinstance(t, str) else t.__name__ for t in retry_on),
                backoff=backoff,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if mode is None:
            mode = CallMode.ARGS if star else CallMode.ONE
        fn_ref = reference(fn)
        batch_size = _positive("batch_size", batch_size) or self.batch_size
        plan = sizing.BatchPlan(batch_size) if batch_size else self._plan(fn_ref, iterable)
        spec = JobSpec(
            queue=self.queue,
            fn_ref=fn_ref,
            codec=self.codec if codec is None else get_codec(codec),
            mode=mode,
            batch_size=plan.size,
            chunksize=_positive("chunksize", chunksize) or self.chunksize or 0,
            result_ttl=self.result_ttl if result_ttl is None else result_ttl,
            options=options,
            ramp_max=plan.ramp_max,
            split_bytes=0 if batch_size else sizing.MAX_BATCH_BYTES,
        )
        return Job(self, Enqueuer(self.redis, spec).run(iterable))

    def _plan(self, fn_ref: str, iterable: Iterable[Any]) -> sizing.BatchPlan:
        """Automatic batch sizes, from the function's published cost and the
        nodes serving the queue (``producer.sizing``)."""
        try:
            total: int | None = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
        with translate_errors(f"reading the cost of {fn_ref} on queue {self.queue}"):
            try:
                cost, capacity = self._costs.read(self.queue, fn_ref)
            except redis.ResponseError:  # e.g. an ACL that denies it: size without
                cost, capacity = None, sizing.Capacity.unknown()
        return sizing.plan(total, cost, capacity)

    def submit(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Job:
        """Enqueue one call ``fn(*args, **kwargs)`` as a one-item job."""
        return self.map(fn, [(args, kwargs)], batch_size=1, chunksize=1, mode=CallMode.CALL)

    def job(self, job_id: str) -> Job:
        """Reattach to a job by id (from this or any other process)."""
        job = Job(self, job_id)
        job.meta()  # raises JobNotFound early
        return job


def _positive(name: str, value: int | None) -> int | None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ConfigError(f"{name} must be a whole number of at least 1, got {value!r}")
    return value
