"""Imported by the node's forkserver at its start (and only there): the
forkserver dies with the node, and tells its children its pid. See
``taskfan.lifeline``."""

import os

from taskfan.lifeline import FORKSERVER_PID, NODE_PID, die_with_parent

die_with_parent(NODE_PID)
os.environ[FORKSERVER_PID] = str(os.getpid())
