"""The node's process pool: a ProcessPoolExecutor that can be rebuilt and killed.

Each rebuild bumps ``generation``, so results from a broken pool's futures are
told apart from the new pool's.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from taskfan.lifeline import NODE_PID
from worker.pool.child import init_child


class Pool:
    def __init__(self, processes: int, start_method: str, paths: list[str]) -> None:
        self.processes = processes
        self.start_method = start_method
        self.paths = paths
        self.generation = 0
        self.restarts = 0
        self._executor = self._new()

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

    def recycle(self) -> None:
        """Replace an idle pool by a new one (``max_tasks_per_child``): its
        processes exit once the queue is empty; not counted as a restart."""
        self._executor.shutdown(wait=True)
        self._executor = self._new()
        self.generation += 1

    def kill(self) -> None:
        """SIGKILL every process of the pool (its futures then fail as broken)."""
        for process in self._processes():
            with contextlib.suppress(Exception):
                process.kill()

    def shutdown(self, wait: bool) -> None:
        """Stop the pool: after the tasks in it (``wait``), or killing them now."""
        if not wait:
            self.kill()
        self._executor.shutdown(wait=wait, cancel_futures=True)

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
