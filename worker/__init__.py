"""The worker node: reads batches from Redis and fans them out through a process pool."""

from worker.node.node import Node

__all__ = ["Node"]
