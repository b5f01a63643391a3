"""Every Redis command a worker node sends, in one place (no threads here).

``NodeRedis`` gathers the node's Redis work, one job per module:

- ``worker.sources.streams.redis_groups``: the shared state, creating the consumer groups and
  loading the scripts, and doing it again when Redis lost them (NOGROUP);
- ``worker.sources.streams.batch_reads``: reading batches (XREADGROUP, XAUTOCLAIM for batches
  whose lease lapsed) and announcing submit calls taken;
- ``worker.sources.streams.job_states``: the job-state lookups that mark batches of cancelled,
  abandoned or vanished jobs, and ending abandoned jobs;
- ``worker.sources.streams.batch_writes``: recording finished batches (record.lua per batch,
  then XACK + XDEL, one pipeline for many batches);
- ``worker.sources.streams.leases``: refreshing leases and handing batches back;
- ``worker.sources.streams.node_record``: the node record, the other nodes' records and the
  queue depths.
"""

from __future__ import annotations

from worker.sources.streams.batch_reads import BatchReads
from worker.sources.streams.batch_writes import BatchWrites
from worker.sources.streams.leases import Leases
from worker.sources.streams.node_record import NodeRecord

__all__ = ["NodeRedis"]


class NodeRedis(BatchReads, BatchWrites, Leases, NodeRecord):
    """A worker node's Redis commands (see the module docstring for the parts)."""
