"""RQ's key names, taken from RQ's own classes: the one place the adapter builds them.

``QueueKeys`` names one queue's keys, ``job_key`` and ``worker_key`` a job's
hash and a worker's hash, ``worker_executions_key`` the set of a worker's running
executions (RQ 3; ``versions``), and ``JOB_AFFIXES`` the text around a job id in
each per-job key the Lua scripts build themselves (``lua/_keys.lua``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from rq.executions import Execution, ExecutionRegistry
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job
from rq.queue import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.suspension import WORKERS_SUSPENDED
from rq.worker import SimpleWorker

from worker.sources.rq.adapter.versions import worker_executions_key as worker_executions_key

#: set while ``rq suspend`` is in force
SUSPENDED = WORKERS_SUSPENDED


@dataclass(frozen=True)
class QueueKeys:
    """The keys of one RQ queue, as RQ names them."""

    name: str

    @property
    def queue(self) -> str:
        return Queue.redis_queue_namespace_prefix + self.name

    @property
    def intermediate(self) -> str:
        return IntermediateQueue.get_intermediate_queue_key(self.queue)

    def first_seen(self, job_id: str) -> str:
        return f"{self.intermediate}:first_seen:{job_id}"

    @property
    def started(self) -> str:
        return StartedJobRegistry.key_template.format(self.name)

    @property
    def finished(self) -> str:
        return FinishedJobRegistry.key_template.format(self.name)

    @property
    def failed(self) -> str:
        return FailedJobRegistry.key_template.format(self.name)


def job_key(job_id: str) -> str:
    return Job.key_for(job_id)


def worker_key(name: str) -> str:
    return SimpleWorker.redis_worker_namespace_prefix + name


def _affixes(template: str) -> tuple[str, str]:
    """A key built by RQ around the id "\0", as (before, after): scripts build
    per-job keys from these (RQ's keys are not cluster-safe anyway: RQ does not
    support Redis Cluster), so that each job costs two arguments, not six keys."""
    before, _, after = template.partition("\0")
    return before, after


#: the affixes of a job's keys, in the order the scripts take them (ARGV[1..12])
JOB_AFFIXES = [
    part
    for template in (
        Job.key_for("\0"),
        Result.get_key("\0"),
        Execution("", "\0", cast(Any, None)).key,  # + execution id
        ExecutionRegistry.key_template.format("\0"),
        Job.dependents_key_for("\0"),
        f"{Job.redis_job_namespace_prefix}:\0:dependencies",  # Job.dependencies_key (sic)
    )
    for part in _affixes(template)
]
