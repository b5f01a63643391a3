"""Tie pool processes to the node's life: when a node dies, its pool goes too.

A worker node killed with SIGKILL cannot stop its pool. Its forkserver and pool
processes would live on as orphans (each pool process holds the forkserver's
"alive" pipe and its own call queue's write end, so nothing ever tells them).
On Linux each of them asks the kernel to SIGKILL it when its parent dies
(``PR_SET_PDEATHSIG``): the forkserver (through ``worker.forkserver_preload``)
with the node, each pool process (from the pool initializer) with its parent.

A parent that dies before the request takes effect would be missed, so each
process then checks that its parent is still the one it was started by; the
node and the forkserver leave their pids in the environment for that. Elsewhere
than Linux this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
NODE_PID = "TASKFAN_NODE_PID"
FORKSERVER_PID = "TASKFAN_FORKSERVER_PID"


def die_with_parent(expected_parent: str | None) -> None:
    """SIGKILL this process when its parent exits; exit now if it already has.

    ``expected_parent`` names the environment variable holding the pid of the
    process that started this one.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    except (OSError, AttributeError):
        return
    expected = os.environ.get(expected_parent, "") if expected_parent else ""
    if expected.isdigit() and os.getppid() != int(expected):
        os._exit(1)  # orphaned before the request took effect
