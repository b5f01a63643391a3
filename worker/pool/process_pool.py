"""The node's process pool: a ProcessPoolExecutor that can be rebuilt and killed.

Each rebuild bumps ``generation``, so results from a broken pool's futures are
told apart from the new pool's.

A pool let go whole (replaced under ``max_tasks_per_child``, or at the node's
stop) is never waited for without a bound: a process in it may not exit (a task
left a non-daemon thread running, which Python waits for at exit), and waiting
for it would stop the node's loop. Its processes get ``EXIT_SECONDS`` to exit,
then are killed (``reap``, called from the node's loop; ``shutdown``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from taskfan.lifeline import NODE_PID
from worker.pool.child import init_child

#: seconds the processes of a pool let go have to exit before they are killed
EXIT_SECONDS = 10.0


@dataclass
class _Leaving:
    """A pool let go: its processes, and when those still there are killed."""

    processes: list[Any]
    #: the pool's manager thread, which joins its processes and then ends
    manager: threading.Thread | None
    kill_at: float

    @classmethod
    def of(cls, executor: ProcessPoolExecutor, kill_at: float) -> _Leaving:
        """Taken before ``executor.shutdown()``, which forgets both."""
        processes = list((getattr(executor, "_processes", None) or {}).values())
        return cls(processes, getattr(executor, "_executor_manager_thread", None), kill_at)

    def gone(self) -> bool:
        """Whether its processes all exited (its manager thread joined them)."""
        return self.manager is None or not self.manager.is_alive()


class Pool:
    def __init__(self, processes: int, start_method: str, paths: list[str]) -> None:
        self.processes = processes
        self.start_method = start_method
        self.paths = paths
        self.generation = 0
        self.restarts = 0
        self._executor = self._new()
        #: pools let go whose processes may not have exited yet
        self._leaving: list[_Leaving] = []

    def _new(self) -> ProcessPoolExecutor:
        os.environ[NODE_PID] = str(os.getpid())  # for taskfan.lifeline in the children
        context = multiprocessing.get_context(self.start_method)
        if self.start_method == "forkserver":
            # The forkserver starts with the current folder first on its path, where a
            # user's worker.py would stand in for ours: off it first (taskfan.syspath).
            context.set_forkserver_preload(
                ["taskfan.forkserver_syspath", "worker.pool.forkserver_preload"]
            )
        return ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=context,
            initializer=init_child,
            initargs=(self.paths, self.start_method == "forkserver"),
        )

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        """Raises BrokenProcessPool when the pool broke and was not rebuilt yet."""
        return self._executor.submit(fn, *args)

    def rebuild(self) -> None:
        # Kill first: shutdown() forgets the processes, and one stuck in a task
        # (a hard timeout) would live on, and hold the interpreter's exit.
        self.kill()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new()
        self.generation += 1
        self.restarts += 1

    def recycle(self, now: float) -> None:
        """Replace an idle pool by a new one (``max_tasks_per_child``), not
        waiting for it: its processes exit once told to, and those that do not
        by ``now + EXIT_SECONDS`` are killed (``reap``); not counted as a restart."""
        self._let_go(now + EXIT_SECONDS)
        self._executor = self._new()
        self.generation += 1

    def reap(self, now: float) -> int:
        """Kill the processes of pools let go that outlived their time; how many
        were still there."""
        killed = 0
        for leaving in list(self._leaving):
            if leaving.gone():
                self._leaving.remove(leaving)
            elif now >= leaving.kill_at:
                killed += _kill(leaving.processes)
                self._leaving.remove(leaving)
        return killed

    def next_reap(self) -> float | None:
        """When ``reap`` has processes to kill, if they are still there."""
        return min((leaving.kill_at for leaving in self._leaving), default=None)

    def _let_go(self, kill_at: float) -> None:
        self._leaving.append(_Leaving.of(self._executor, kill_at))
        self._executor.shutdown(wait=False)

    def kill(self) -> None:
        """SIGKILL every process of the pool (its futures then fail as broken)."""
        _kill(self._processes())

    def shutdown(self, wait: bool) -> None:
        """Stop the pool, and kill what is left of pools let go: after the tasks
        in it (``wait``; a process still there ``EXIT_SECONDS`` after the last
        one is killed), or killing them now."""
        if not wait:
            self.kill()
        self._leaving.append(_Leaving.of(self._executor, 0.0))
        self._executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + EXIT_SECONDS
        for leaving in self._leaving:
            for process in leaving.processes:
                with contextlib.suppress(Exception):
                    process.join(max(0.0, deadline - time.monotonic()) if wait else 0.0)
            _kill(leaving.processes)
            if leaving.manager is not None:
                leaving.manager.join(EXIT_SECONDS)
        self._leaving.clear()

    def death_cause(self, wait: float = 1.0) -> str:
        """Name what ended a pool process: a signal or an exit code, when we can tell.

        Call it once the pool broke. The pool's manager thread then terminates
        the other processes and joins them all, and exits. Wait for it (up to
        ``wait`` seconds) rather than join the processes here: two threads
        reading one exit status from the forkserver race, and the loser reads
        "exit code 255".
        """
        manager = getattr(self._executor, "_executor_manager_thread", None)
        if manager is not None:
            manager.join(wait)
        codes = [p.exitcode for p in self._processes() if p.exitcode]
        # Once one process died the pool terminates the others (SIGTERM): skip those.
        codes.sort(key=lambda code: code == -signal.SIGTERM)
        for code in codes:
            if code < 0:
                with contextlib.suppress(ValueError):
                    return f"signal {-code} ({signal.Signals(-code).name})"
                return f"signal {-code}"
            return f"exit code {code}"
        return "cause unknown"

    def _processes(self) -> list[Any]:
        # ProcessPoolExecutor keeps its processes in a private dict; read-only use.
        return list((getattr(self._executor, "_processes", None) or {}).values())


def _kill(processes: list[Any]) -> int:
    """SIGKILL those of ``processes`` still running; how many were."""
    killed = 0
    for process in processes:
        with contextlib.suppress(Exception):
            if process.exitcode is None:
                process.kill()
                killed += 1
    return killed
