"""Tie pool processes to the node's life: when a node dies, its pool goes too.

A worker node killed with SIGKILL cannot stop its pool. Its forkserver and pool
processes would live on as orphans (each pool process holds the forkserver's
"alive" pipe and its own call queue's write end, so nothing ever tells them).
Each of them asks to be SIGKILLed when its parent dies (``taskfan.lifeline``):
the forkserver (through ``worker.forkserver_preload``) with the node, each pool
process (from the pool initializer) with its parent. The node and the
forkserver leave their pids in the environment for the check that their
children were not orphaned before asking.
"""

from __future__ import annotations

from taskfan.lifeline import die_with_parent

NODE_PID = "TASKFAN_NODE_PID"
FORKSERVER_PID = "TASKFAN_FORKSERVER_PID"

__all__ = ["FORKSERVER_PID", "NODE_PID", "die_with_parent"]
