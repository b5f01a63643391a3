"""``Executor``: a ``concurrent.futures.Executor`` whose work runs on the cluster.

Code written for ``ProcessPoolExecutor`` runs on a cluster by changing the line
that builds the executor::

    with Executor("redis://redis:6379/0") as executor:
        print(list(executor.map(task, items, chunksize=100)))

``submit`` calls of one executor share one open job, so results of many
futures come back through one events stream that a collector thread reads; a
single round trip enqueues each call. ``map`` enqueues one job per call, eagerly
like the stdlib, and returns a lazy iterator over its results in order. With the
pickle codec an item's exception is raised as itself, with the remote traceback
as its ``__cause__``, as ``ProcessPoolExecutor`` does.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
from redis.cluster import RedisCluster

from producer.callables import Described
from producer.client import Client
from producer.executor import futures
from producer.executor.buffered import BufferedMap, Gate, check_buffersize
from producer.executor.coalesce import Call
from producer.executor.collector import Collector
from producer.executor.futures import CallFuture, raise_original
from producer.executor.pool_compat import Zip, check_pool_arguments, originals
from producer.executor.submitter import Submitter
from producer.job import Job
from producer.lease import LeaseKeeper
from producer.records import JobRecords, JobSpec, new_job_id, new_nonce
from taskfan.connection import RedisClient
from taskfan.errors import (
    EncodeError,
    LimitExceeded,
    TaskFailed,
    TaskfanError,
)
from taskfan.limits import format_size
from taskfan.options import CallMode
from taskfan.pipelines import Sequenced

#: callables whose reference cannot change: described once per executor
_PLAIN = (types.FunctionType, types.BuiltinFunctionType)


class Executor(Submitter, Collector, concurrent.futures.Executor):
    """Run calls on taskfan worker nodes.

    ``target`` is a Redis URL, a ``redis.Redis`` or ``RedisCluster``, a
    ``producer.Client``, or None (configured by ``TASKFAN_REDIS_URL``).
    ``max_workers`` and ``mp_context`` are accepted, and ignored, so that
    ``ProcessPoolExecutor(max_workers=4)`` becomes ``Executor(url, max_workers=4)``
    (and ``Executor(4)``, as ``ProcessPoolExecutor(4)``, reads the URL from
    ``TASKFAN_REDIS_URL``):
    the nodes decide how many processes run, and how they start them.
    ``initializer(*initargs)`` runs in each node's pool process before its first
    call of this executor there (``worker.pool.process_setup``; one that raises fails those
    calls with ``InitializerError``, a ``BrokenProcessPool``).
    ``max_tasks_per_child`` is accepted and is a node's setting only
    (``taskfan worker --max-tasks-per-child N``): a pool process serves many
    jobs, so one job cannot decide when it is replaced.
    """

    def __init__(
        self,
        target: str | RedisClient | Client | int | None = None,
        queue: str = "default",
        *,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., Any] | str | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: int | None = None,
        **client_options: Any,
    ) -> None:
        if isinstance(target, int) and not isinstance(target, bool):
            # ProcessPoolExecutor(4) with this class imported in its place:
            # max_workers, ignored like the keyword; the Redis is the environment's
            max_workers, target = target, None
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")  # as the stdlib's
        if isinstance(target, Client):
            self.client = target
        elif isinstance(target, (redis.Redis, RedisCluster)):
            self.client = Client(target, queue, **client_options)
        elif isinstance(target, str):
            self.client = Client.from_url(target, queue, **client_options)
        else:
            self.client = Client.from_env(queues=(queue,), **client_options)
        #: the initializer's reference and encoded arguments ("", b"": none)
        check_pool_arguments(initializer, max_tasks_per_child)
        self._init = self.client.initializer_of(initializer, initargs, self.client.codec)
        self._initializer, self._initargs = initializer, tuple(initargs)
        self._lock = threading.Lock()
        self._init_submitter()
        self._shutdown = False
        self._job: Job | None = None
        self._count = 0
        self._nonce = new_nonce()
        self._futures: dict[int, CallFuture] = {}
        #: plain functions submitted, as they travel (``producer.callables``)
        self._described: dict[Any, Described] = {}
        #: jobs of map() calls not yet known to be over: shutdown(wait=True) waits for them
        self._maps: list[Job] = []
        #: of those, the bounded maps' gates (buffersize), by job id: shutdown shuts them
        self._bounded: dict[str, Gate] = {}
        self._collector: threading.Thread | None = None
        self._spec: JobSpec | None = None
        #: writes the shared job's meta, counters and entries (producer.records)
        self._records: JobRecords | None = None
        #: renews the shared job's enqueue lease while this executor lives
        self._keeper: LeaseKeeper | None = None
        futures.register(self)  # the interpreter's exit waits for our calls

    # ----------------------------------------------------------------- submit

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        futures.check_accepting()
        called = self._described.get(fn) if type(fn) in _PLAIN else None
        if called is None:
            called = self.client.describe(fn, self.client.codec)
            if type(fn) in _PLAIN and not called.wrap and len(self._described) < 256:
                self._described[fn] = called  # resolved once: a module-level function
        fn_ref = called.shown
        try:
            payload = self.client.codec.dumps([(args, kwargs)])
        except EncodeError as exc:
            if exc.__cause__ is None:
                raise
            # As the stdlib: the pickling error itself, on the future (it pickles
            # calls in a thread of its own, so submit() cannot raise it).
            failed: concurrent.futures.Future[Any] = concurrent.futures.Future()
            failed.set_exception(exc.__cause__)
            return failed
        limit = self.client.limits.max_item_bytes
        if len(payload) > limit:
            raise LimitExceeded(
                f"submit({fn_ref}): the call's arguments encode to {format_size(len(payload))} "
                f"with the {self.client.codec.name} codec, over max_item_bytes "
                f"({format_size(limit)}): pass large data by reference (a path or URL)"
            )
        with self._cond:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._keeper is not None:
                self._keeper.check()  # JobAbandoned: this process froze past the lease
            future = CallFuture()
            call = Call(future, called, (args, kwargs), len(payload))
            future.take_back = functools.partial(self._take_back, call)
            alone = self._buffer(call)
        if alone:
            self._send_round([call])
        return future

    def _open_job(self, seq: Sequenced) -> Job:
        """(The submitter thread.) The job that this executor's submit calls
        share, its meta (in its queue's index) queued on ``seq`` ahead of the
        first entry, which names it; ``_write`` keeps it once that is sent."""
        client = self.client
        self._spec = JobSpec(
            client.queue, "*", client.codec, CallMode.CALL, 1, 0, client.result_ttl,
            initializer=self._init[0], initargs=self._init[1],
        )  # fmt: skip
        job = Job(client, new_job_id(), codec=client.codec.name)
        self._records = JobRecords(job.id, client.queue, self._nonce, client.keyring)
        # unsealed while this executor lives
        self._records.create(seq, self._spec, time.time(), lease=client.enqueue_lease)
        return job

    def _start_collector(self) -> None:
        """(Once the job exists.) Start reading its events, once."""
        with self._cond:
            if self._collector is None:
                self._collector = threading.Thread(
                    target=self._collect, name="taskfan-collector", daemon=True
                )
                self._collector.start()

    # ----------------------------------------------------------------- map

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        """Like ``Executor.map``: ordered, lazy, ``timeout`` counted from this call.

        ``chunksize`` is the node's items per pool message; left out, the node
        measures the function and picks one. ``buffersize`` is Python 3.14's:
        at most that many calls submitted ahead of the consumer, the input read
        lazily (``producer.executor.buffered``), on every Python.
        """
        check_buffersize(buffersize)
        if chunksize is not None and chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        futures.check_accepting()
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if buffersize is not None:
            bounded = BufferedMap(
                self.client, fn, iterables, timeout, buffersize, chunksize=chunksize,
                initializer=self._initializer, initargs=self._initargs,
            )  # fmt: skip
            job = Job(
                self.client, bounded.job.id, bounded.job.codec
            )  # not the handle: see BufferedMap
            with self._lock:
                self._maps.append(job)
                self._bounded[job.id] = bounded.gate
            return self._forgetting(job, originals(bounded.values))
        end_time = None if timeout is None else time.monotonic() + timeout
        try:
            job = self.client.map(
                fn, Zip(iterables), star=True, chunksize=chunksize,
                initializer=self._initializer, initargs=self._initargs,
            )  # fmt: skip
        except EncodeError as exc:  # as the stdlib: the pickling error itself
            if exc.__cause__ is None:
                raise
            raise exc.__cause__ from None
        with self._lock:
            self._maps.append(job)
        return self._iterate(job, end_time)

    def _forgetting(self, job: Job, values: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from values
        finally:
            self._forget(job)

    def _iterate(self, job: Job, end_time: float | None) -> Iterator[Any]:
        remaining = None if end_time is None else max(0.0, end_time - time.monotonic())
        complete = False
        try:
            yield from job.results(timeout=remaining)
            complete = True
        except TaskFailed as failed:
            exc = raise_original(failed)
            raise exc from exc.__cause__
        finally:
            if not complete:
                # Like the stdlib, which cancels the pending futures when the
                # iterator is dropped or raises: stop the rest of the job.
                with contextlib.suppress(TaskfanError, redis.RedisError):
                    job.cancel()
            self._forget(job)

    # ----------------------------------------------------------------- shutdown

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cond:
            already = self._shutdown
            self._shutdown = True
            maps = list(self._maps)
            bounded = list(self._bounded.values())
            self._cond.notify_all()
        for gate in bounded:  # they send nothing more: sealed with the calls they sent
            gate.shut()
        if cancel_futures:
            self._take_back_all()
            for map_job in maps:  # the stdlib cancels map()'s pending futures too
                with contextlib.suppress(TaskfanError, redis.RedisError):
                    map_job.cancel()
        if not already:
            self._seal()  # once what was submitted is sent
        if not wait:
            return
        while self._collector is not None:
            self._collector.join(timeout=futures.EXIT_PATIENCE)
            if not self._collector.is_alive() or not futures.keep_waiting(self.client.redis):
                break
        for map_job in maps:  # as the stdlib, which waits for map()'s futures too
            self._wait_map(map_job)
            self._forget(map_job)

    def _forget(self, job: Job) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._bounded.pop(job.id, None)
            self._maps.remove(job)

    @staticmethod
    def _wait_map(job: Job) -> None:
        """Until the job ends; at interpreter exit, only while Redis answers."""
        while True:
            try:
                if job.wait(timeout=futures.EXIT_PATIENCE):
                    return
            except (TaskfanError, redis.RedisError):  # cancelled, gone, or Redis went
                return
            if not futures.keep_waiting(job.client.redis):
                return
