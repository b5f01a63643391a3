"""The producer's entry point: enqueue jobs on a queue, reattach to jobs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis

from producer import sizing
from producer import stream as stream_mod
from producer.callables import Described, describe
from producer.enqueue import Enqueuer
from producer.job import Job
from producer.records import JobSpec
from taskfan.bounds import MAX_COUNT, MAX_RESULT_TTL, count_problem
from taskfan.codec import Codec, get_codec
from taskfan.connection import RedisClient, connect, translate_errors
from taskfan.errors import (
    ConfigError,
    EncodeError,
    LimitExceeded,
    PickleRefused,
    ProtocolError,
)
from taskfan.keys import QueueKeys
from taskfan.limits import Limits, format_size
from taskfan.options import CallMode, TaskOptions
from taskfan.refs import reference
from taskfan.settings import (
    DEFAULT_ENQUEUE_LEASE,
    DEFAULT_RESULT_TTL,
    ENQUEUE_LEASE_BOUNDS,
    Settings,
    secrets_from_env,
)
from taskfan.signing import Keyring


class Client:
    """Enqueue jobs on one queue of one Redis.

    ``codec`` is "pickle" (any picklable value; nodes run pickle from Redis, so
    trust your Redis or sign) or "json" (JSON values only, never runs code).

    Security (docs/security.md): ``secret`` (a shared secret, or a list of them:
    the first signs, any verifies) signs every batch and accepts only results
    nodes signed with it. Without ``secret=``, the client reads
    ``TASKFAN_SECRET`` or ``TASKFAN_SECRET_FILE`` as nodes and the CLI do
    (``secret=()`` signs nothing whatever the environment says).
    ``no_pickle=True`` uses the json codec and refuses to read any job's
    results as pickle. A job is read with the codec it was
    enqueued with (``Job.codec``), never with one its meta in Redis names alone:
    a job reattached with ``job(id)`` is read as pickle only when the client
    allows pickle (``allow_pickle``: by default, when its codec is pickle).
    ``max_item_bytes`` and ``max_batch_bytes`` limit what one item and one batch
    may encode to (LimitExceeded at enqueue).

    Functions travel by reference (``module:qualname``); a ``functools.partial``,
    a bound method, a callable instance travel as the function they call plus
    their bound state, encoded with the job's codec (``producer.callables``).
    ``by_value=True`` sends lambdas, closures and functions of ``__main__`` by
    value with cloudpickle (taskfan's ``byvalue`` extra, or ``pip install
    cloudpickle``): pickled code, which ``--no-pickle`` nodes refuse, and nodes
    with an ``--allow`` list too
    unless they pass ``--allow-by-value`` (docs/security.md).
    """

    def __init__(
        self,
        redis_client: RedisClient,
        queue: str = "default",
        *,
        codec: str | None = None,
        batch_size: int | None = None,
        chunksize: int | None = None,
        result_ttl: int = DEFAULT_RESULT_TTL,
        secret: Keyring | str | bytes | Sequence[str | bytes] | None = None,
        no_pickle: bool = False,
        allow_pickle: bool | None = None,
        max_item_bytes: int | None = None,
        max_batch_bytes: int | None = None,
        enqueue_lease: float = DEFAULT_ENQUEUE_LEASE,
        by_value: bool = False,
    ) -> None:
        try:
            QueueKeys(queue)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.redis = redis_client
        self.queue = queue
        self.no_pickle = no_pickle
        self.codec = self._codec(codec, "json" if no_pickle else "pickle")
        if no_pickle and allow_pickle:
            raise ConfigError("allow_pickle and no_pickle contradict each other: choose one")
        #: whether a job reattached without its codec may be read as pickle
        self.allow_pickle = (
            False
            if no_pickle
            else (self.codec.name == "pickle" if allow_pickle is None else allow_pickle)
        )
        if secret is None:  # as the nodes and the CLI given the same environment
            secret = secrets_from_env(os.environ)
        self.keyring = Keyring.of(secret)
        self.limits = Limits.of(max_item_bytes, max_batch_bytes)
        self.batch_size = _positive("batch_size", batch_size)
        self.chunksize = _positive("chunksize", chunksize)
        self.result_ttl = _result_ttl(result_ttl)
        low, high = ENQUEUE_LEASE_BOUNDS
        if not low <= enqueue_lease <= high:
            raise ConfigError(
                f"enqueue_lease must be between {low:g} and {high:g} seconds, got {enqueue_lease}"
            )
        #: seconds a job being enqueued outlives this producer (producer.lease)
        self.enqueue_lease = float(enqueue_lease)
        self._costs = sizing.CostBoard(redis_client)
        #: send lambdas, closures and functions of ``__main__`` by value (cloudpickle)
        self.by_value = bool(by_value)

    @classmethod
    def from_url(cls, url: str, queue: str = "default", **options: Any) -> Client:
        return cls(connect(url), queue, **options)

    @classmethod
    def from_settings(cls, settings: Settings, *, allow_pickle: bool | None = None) -> Client:
        if settings.redis_url is None:
            raise ConfigError("no Redis configured: pass a URL or set TASKFAN_REDIS_URL")
        return cls(
            connect(settings.redis_url, block_seconds=settings.block_seconds),
            settings.queue,
            codec=settings.codec,
            batch_size=settings.batch_size,
            chunksize=settings.chunksize,
            result_ttl=settings.result_ttl,
            secret=settings.secrets,
            no_pickle=settings.no_pickle,
            allow_pickle=allow_pickle,
            max_item_bytes=settings.max_item_bytes,
            max_batch_bytes=settings.max_batch_bytes,
            enqueue_lease=settings.enqueue_lease,
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
        backoff_max: float = 10.0,
        initializer: Callable[..., Any] | str | None = None,
        initargs: Iterable[Any] = (),
        stream: bool = False,
        window: int | None = None,
    ) -> Job:
        """Enqueue ``fn`` over every item; returns once every batch is in Redis.

        ``stream=True`` returns at once instead (a ``producer.stream.StreamJob``):
        a thread enqueues while its ``results()`` are read, never more than
        ``window`` batches (default 16) ahead of the reader, and frees what was
        read, so an endless input streams in flat memory; closing the results
        iterator cancels the rest.

        ``star=True`` calls ``fn(*item)`` (like ``itertools.starmap``).
        ``batch_size`` is items per Redis entry, ``chunksize`` items per pool
        message on a node; both default to automatic.

        Per item: ``timeout`` (seconds; TimeoutError raised inside the task),
        ``hard_timeout`` (seconds; the node kills the process running the item
        and records it as failed), ``retries`` extra attempts after an
        exception, only for ``retry_on`` types (classes or names) when given,
        waiting ``backoff`` seconds, doubled per attempt up to ``backoff_max``,
        with jitter. The node holds the wait, not a pool process, which runs
        other items meanwhile.

        ``initializer(*initargs)`` runs in each pool process before its first
        item of this job there (a module-level function, by reference like
        ``fn``; ``initargs`` encoded with the job's codec). One that raises fails
        the job's items given to that process with ``InitializerError``
        (``worker.pool.process_setup``).
        """
        options = _task_options(
            timeout, hard_timeout, retries, retry_on, backoff=backoff, backoff_max=backoff_max
        )
        if mode is None:
            mode = CallMode.ARGS if star else CallMode.ONE
        job_codec = self._codec(codec, self.codec.name)
        called = self.describe(fn, job_codec)
        fn_ref = called.fn_ref
        init_ref, init_blob = self.initializer_of(initializer, initargs, job_codec)
        batch_size = _positive("batch_size", batch_size) or self.batch_size
        plan = sizing.BatchPlan(batch_size) if batch_size else self._plan(fn_ref, iterable)
        spec = JobSpec(
            queue=self.queue,
            fn_ref=fn_ref,
            codec=job_codec,
            mode=mode,
            batch_size=plan.size,
            chunksize=_positive("chunksize", chunksize) or self.chunksize or 0,
            result_ttl=self.result_ttl if result_ttl is None else _result_ttl(result_ttl),
            options=options,
            ramp_max=plan.ramp_max,
            split_bytes=0 if batch_size else sizing.MAX_BATCH_BYTES,
            wrap=called.wrap,
            bound=called.bound,
            label=called.label,
            initializer=init_ref,
            initargs=init_blob,
        )
        kind = stream_mod.StreamEnqueuer if stream else Enqueuer
        enqueuer = kind(
            self.redis, spec, keyring=self.keyring, limits=self.limits, lease=self.enqueue_lease
        )
        if isinstance(enqueuer, stream_mod.StreamEnqueuer):
            size = _positive("window", window) or stream_mod.DEFAULT_WINDOW
            return stream_mod.start(self, enqueuer, iterable, size)
        job_id = enqueuer.run(iterable)
        # An empty job has no events to wake its reader: it reads the meta first.
        return Job(self, job_id, codec=spec.codec.name, fn_ref=fn_ref if enqueuer.batches else None)

    def describe(self, fn: Callable[..., Any] | str, codec: Codec) -> Described:
        """How ``fn`` travels (``producer.callables``); its bound state must fit
        ``max_batch_bytes``, as every batch entry carries it."""
        called = describe(fn, codec, self.by_value)
        limit = self.limits.max_batch_bytes
        if len(called.bound) > limit // 2:
            raise LimitExceeded(
                f"{called.shown}: its bound state encodes to {format_size(len(called.bound))}, "
                f"over half of max_batch_bytes ({format_size(limit)}), and every batch "
                "carries it: bind less (load large data in the task, from a path or URL)"
            )
        return called

    def initializer_of(
        self, initializer: Callable[..., Any] | str | None, initargs: Iterable[Any], codec: Codec
    ) -> tuple[str, bytes]:
        """The initializer's reference and its arguments encoded ("", b"": none);
        like bound state, its arguments must fit half of ``max_batch_bytes``,
        as every batch entry carries them."""
        if initializer is None:
            if tuple(initargs):
                raise TypeError("initargs given without an initializer")
            return "", b""
        ref = reference(initializer)
        try:
            blob = codec.dumps(list(initargs))
        except EncodeError as exc:
            raise EncodeError(f"initializer {ref}: its initargs: {exc}") from exc
        limit = self.limits.max_batch_bytes
        if len(blob) > limit // 2:
            raise LimitExceeded(
                f"initializer {ref}: its initargs encode to {format_size(len(blob))}, over "
                f"half of max_batch_bytes ({format_size(limit)}), and every batch carries them"
            )
        return ref, blob

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

    def _codec(self, name: str | None, default: str) -> Codec:
        codec = get_codec(default if name is None else name)
        if self.no_pickle and codec.name == "pickle":
            raise ConfigError("codec 'pickle' was asked for, but this client has no_pickle set")
        return codec

    def result_codec(self, job_id: str, name: str, expected: str | None = None) -> Codec:
        """The codec to read a job's results with, ``name`` being what its meta says.

        ``expected`` is the codec the job was enqueued with, when this handle
        knows it: a meta that says otherwise was changed in Redis (ProtocolError).
        Without it, the meta is believed only for json, and for pickle when the
        client allows pickle; under no_pickle nothing is read as pickle
        (PickleRefused).
        """
        if self.no_pickle and name == "pickle":
            raise PickleRefused(
                f"job {job_id} uses the pickle codec, and this client refuses pickle "
                "(no_pickle, TASKFAN_NO_PICKLE): read it with a client that trusts its Redis"
            )
        if expected is not None and name != expected:
            raise ProtocolError(
                f"job {job_id}: its meta in Redis says codec {name!r}, but the job was "
                f"enqueued with {expected!r}: refusing to read it (was the meta changed?)"
            )
        if expected is None and name == "pickle" and not self.allow_pickle:
            raise PickleRefused(
                f"job {job_id}: its meta in Redis says codec 'pickle', and this client reads "
                "pickle, which can run code, only from jobs it knows were enqueued so: pass "
                "client.job(id, codec='pickle') or Client(allow_pickle=True) if you trust that "
                "Redis (in the CLI: --allow-pickle)"
            )
        return get_codec(name)

    def remember_cost(self, fn_ref: str, raw: bytes | None) -> None:
        """A function's published cost, read together with a job's results
        (``producer.reader``): the next ``map`` of it sizes from it without a
        round trip (``producer.sizing``)."""
        self._costs.remember(fn_ref, raw)

    def job(self, job_id: str, codec: str | None = None) -> Job:
        """Reattach to a job by id (from this or any other process).

        ``codec`` is the codec the job was enqueued with, when known: its results
        are then read only with it. Without it, results are read with the codec
        the job's meta names, pickle only when the client allows pickle.
        """
        if codec is not None:
            codec = self._codec(codec, codec).name
        job = Job(self, job_id, codec=codec)
        job.meta()  # raises JobNotFound early
        return job


def _task_options(
    timeout: float | None,
    hard_timeout: float | None,
    retries: int,
    retry_on: Iterable[type[BaseException] | str],
    *,
    backoff: float,
    backoff_max: float,
) -> TaskOptions:
    """``map``'s per-item options; ConfigError naming the one that is wrong."""
    try:
        return TaskOptions(
            timeout=timeout,
            hard_timeout=hard_timeout,
            retries=retries,
            retry_on=tuple(t if isinstance(t, str) else t.__name__ for t in retry_on),
            backoff=backoff,
            backoff_max=backoff_max,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _positive(name: str, value: int | None) -> int | None:
    """A count of items (batch_size, chunksize): None, or 1 to ``MAX_COUNT``."""
    if value is not None and (problem := count_problem(name, value, 1, MAX_COUNT)):
        raise ConfigError(problem)
    return value


def _result_ttl(value: int) -> int:
    """Seconds a finished job is kept (0: for ever); it reaches Redis's EXPIRE."""
    problem = count_problem("result_ttl", value, 0, MAX_RESULT_TTL)
    if problem:
        raise ConfigError(f"{problem} (0 keeps the job for ever)")
    return value
