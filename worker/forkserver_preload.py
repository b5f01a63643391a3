"""Imported by the node's forkserver at its start (and only there): the
forkserver dies with the node. See ``worker.lifeline``."""

from worker.lifeline import die_with_parent

die_with_parent()
