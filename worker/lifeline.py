"""Tie pool processes to the node's life: when a node dies, its pool goes too.

A worker node killed with SIGKILL cannot stop its pool. Its forkserver and pool
processes would live on as orphans (pool processes hold their own queue's write
end, so they never see EOF). On Linux we ask the kernel to SIGKILL each process
when its parent dies (``PR_SET_PDEATHSIG``): the forkserver (through
``worker.forkserver_preload``) with the node, and each pool process (from the
pool initializer) with its parent. Elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL this process when its parent exits (Linux); a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
