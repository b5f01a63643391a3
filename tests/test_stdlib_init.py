"""CPython's initializer and ``max_tasks_per_child`` tests, ported to ``Executor``.

From ``Lib/test/test_concurrent_futures/test_init.py`` (``InitializerMixin``,
``FailingInitializerMixin``) and ``test_process_pool.py``
(``test_max_tasks_per_child``, ``test_max_tasks_per_child_pending_tasks_gh115634``,
``test_max_tasks_early_shutdown``). Each keeps the standard library's name and
assertions and runs against a real worker node; what is intrinsically local is
adapted, and every adaptation says so in an ``# ADAPTED: <why>`` comment. The
functions the node runs live in ``tests/init_calls.py``, which it can import.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import BrokenExecutor

import pytest

from producer import Executor
from tests.conftest import StartWorker
from tests.init_calls import get_init_status, init, init_fail, mul

#: support.SHORT_TIMEOUT
SHORT_TIMEOUT = 30.0


class TestInitializer:
    """InitializerMixin."""

    worker_count = 2

    @pytest.fixture
    def executor(self, redis_url: str, start_worker: StartWorker) -> Iterator[Executor]:
        # ADAPTED: the pool is a worker node's; max_workers is the node's --processes.
        start_worker(processes=self.worker_count)
        executor = Executor(
            redis_url, max_workers=self.worker_count, initializer=init, initargs=("initialized",)
        )
        yield executor
        executor.shutdown(wait=True)

    def test_initializer(self, executor: Executor) -> None:
        futures = [executor.submit(get_init_status) for _ in range(self.worker_count)]

        for f in futures:
            assert f.result(timeout=SHORT_TIMEOUT) == "initialized"


class TestFailingInitializer:
    """FailingInitializerMixin."""

    worker_count = 2

    @pytest.fixture
    def executor(self, redis_url: str, start_worker: StartWorker) -> Iterator[Executor]:
        # ADAPTED: no log queue: the stdlib logs the initializer's traceback in the
        # child (to a multiprocessing Queue the test passes in); on a node it travels
        # with each failed call instead, checked below.
        start_worker(processes=self.worker_count)
        executor = Executor(redis_url, max_workers=self.worker_count, initializer=init_fail)
        yield executor
        executor.shutdown(wait=True)

    def test_initializer(self, executor: Executor) -> None:
        try:
            future = executor.submit(get_init_status)
        except BrokenExecutor:
            # Perhaps the executor is already broken
            pass
        else:
            with pytest.raises(BrokenExecutor) as info:
                future.result(timeout=SHORT_TIMEOUT)
            # ADAPTED: _assert_logged('ValueError: error in initializer') read the
            # child's log; the remote traceback is the exception's __cause__ here.
            assert "ValueError: error in initializer" in str(info.value.__cause__)

        # ADAPTED: "At some point, the executor should break ... and from this point
        # submit() is guaranteed to fail": a node's pool serves other jobs, so a
        # failed initializer breaks neither it nor the executor (no _broken). Every
        # later call of the executor fails the same way instead, in each process.
        for _ in range(2 * self.worker_count):
            with pytest.raises(BrokenExecutor):
                executor.submit(get_init_status).result(timeout=SHORT_TIMEOUT)


class TestMaxTasksPerChild:
    """ProcessPoolExecutorTest's max_tasks_per_child tests."""

    def test_max_tasks_per_child(self, redis_url: str, start_worker: StartWorker) -> None:
        # ADAPTED: no fork check: the stdlib refuses max_tasks_per_child with the
        # fork start method; a node replaces its processes itself, with any start
        # method. ADAPTED: max_tasks_per_child is the node's setting (a pool serves
        # many jobs); the Executor accepts it, and the node runs with it.
        start_worker("--max-tasks-per-child", "3", processes=1)
        executor = Executor(redis_url, max_workers=1, max_tasks_per_child=3)
        f1 = executor.submit(os.getpid)
        original_pid = f1.result(timeout=SHORT_TIMEOUT)
        # The worker pid remains the same as the worker could be reused
        f2 = executor.submit(os.getpid)
        assert f2.result(timeout=SHORT_TIMEOUT) == original_pid
        # ADAPTED: len(executor._processes) == 1: the processes are the node's.
        f3 = executor.submit(os.getpid)
        assert f3.result(timeout=SHORT_TIMEOUT) == original_pid

        # A new worker is spawned, with a statistically different pid,
        # while the previous was reaped.
        f4 = executor.submit(os.getpid)
        new_pid = f4.result(timeout=SHORT_TIMEOUT)
        assert original_pid != new_pid

        executor.shutdown()

    @pytest.mark.parametrize(("max_workers", "max_tasks", "num_tasks"), [(1, 2, 6), (2, 2, 8)])
    def test_max_tasks_per_child_pending_tasks_gh115634(
        self,
        redis_url: str,
        start_worker: StartWorker,
        max_workers: int,
        max_tasks: int,
        num_tasks: int,
    ) -> None:
        # gh-115634: a backlog queued while workers hit their task limit must not
        # deadlock (ProcessPoolExecutor's own limit does on 3.11 to 3.13; a node
        # does not use it: worker.pool.pool_feed).
        # ADAPTED: subTest -> parametrize; the limit and the processes are the node's.
        start_worker("--max-tasks-per-child", str(max_tasks), processes=max_workers)
        executor = Executor(redis_url, max_workers=max_workers, max_tasks_per_child=max_tasks)
        try:
            futures = [executor.submit(mul, i, 2) for i in range(num_tasks)]
            results = [f.result(timeout=SHORT_TIMEOUT) for f in futures]
            assert results == [i * 2 for i in range(num_tasks)]
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def test_max_tasks_early_shutdown(self, redis_url: str, start_worker: StartWorker) -> None:
        # ADAPTED: the limit and the processes are the node's (see above).
        start_worker("--max-tasks-per-child", "1", processes=3)
        executor = Executor(redis_url, max_workers=3, max_tasks_per_child=1)
        futures = []
        for i in range(6):
            futures.append(executor.submit(mul, i, i))
        executor.shutdown()
        for i, future in enumerate(futures):
            assert future.result() == mul(i, i)
