"""Tie a child process to its parent's life: when the parent dies, so does the child.

A process killed with SIGKILL cannot stop the processes it started: a worker
node's forkserver and pool, the worker and the embedded redis-server of
``taskfan run``. On Linux each of them asks the kernel to signal it when its
parent dies (``PR_SET_PDEATHSIG``). A parent that dies before the request takes
effect would be missed, so the child then checks that its parent is still the
one that started it (whose pid the parent leaves in the environment). Elsewhere
than Linux this does nothing.

The request is tied to the *thread* that started the child: start such children
from a thread that lives as long as the parent (the main thread).

A worker node ties its forkserver to itself (``worker.pool.forkserver_preload``)
and each pool process to its parent (the pool initializer,
``worker.pool.child.init_child``); the node and the forkserver leave their pids
in the environment under ``NODE_PID`` and ``FORKSERVER_PID``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1

#: the environment variables in which a worker node and its forkserver leave their pids
NODE_PID = "TASKFAN_NODE_PID"
FORKSERVER_PID = "TASKFAN_FORKSERVER_PID"


def die_with_parent(expected_parent: str | None, signum: int = signal.SIGKILL) -> None:
    """Have ``signum`` sent to this process when its parent exits; exit now if it
    already has.

    ``expected_parent`` names the environment variable holding the pid of the
    process that started this one.
    """
    expected = os.environ.get(expected_parent, "") if expected_parent else ""
    die_with(int(expected) if expected.isdigit() else None, signum)


def die_with(parent_pid: int | None, signum: int = signal.SIGKILL) -> None:
    """``die_with_parent`` given the parent's pid."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signum))
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # orphaned before the request took effect


def tied(command: Sequence[str], signum: int) -> list[str]:
    """``command`` run so that it gets ``signum`` when this process dies.

    The child execs through ``python -m taskfan.lifeline``, which makes the
    request and then becomes ``command`` (the request survives ``exec``): no
    ``preexec_fn``, which is unsafe once threads run.
    """
    return [sys.executable, "-m", "taskfan.lifeline", str(os.getpid()), str(int(signum)), *command]


def main(argv: Sequence[str]) -> None:
    """``python -m taskfan.lifeline PARENT_PID SIGNUM COMMAND [ARG...]``."""
    if len(argv) < 3 or not (argv[0].isdigit() and argv[1].isdigit()):
        sys.exit("usage: python -m taskfan.lifeline PARENT_PID SIGNUM COMMAND [ARG...]")
    die_with(int(argv[0]), int(argv[1]))
    try:
        os.execvp(argv[2], list(argv[2:]))
    except OSError as exc:
        sys.exit(f"cannot run {argv[2]!r}: {exc}")


if __name__ == "__main__":
    main(sys.argv[1:])
