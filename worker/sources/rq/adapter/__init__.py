"""Every touch of RQ's internals, in one package: RQ 2.12 and later 2.x, and RQ 3.x.

A taskfan node drains RQ queues in batches (``worker.sources.rq.rq_source``) and must leave
RQ's records exactly as RQ's own worker would: job hashes, ``Result`` streams,
executions, the started/finished/failed/scheduled registries, the worker's hash.
This package knows RQ's key names, field formats and code paths; the rest of
taskfan talks to it in plain terms (job ids, outcomes, leases) through the names
below, and nothing outside it imports ``rq`` or writes an RQ key. The Lua scripts
in ``lua/`` belong to it: each mirrors one step of RQ's worker for many jobs per
call, which is what makes a node tens of times faster than RQ's own.

Its modules, in the order a job meets them::

  versions      the RQ versions supported (RQ missing: one clear line), and what
                differs between RQ 2 and 3
  checks        Redis 6.2+, the node's trust settings vs the serializer
  keys          RQ's key names (the only place the adapter builds them)
  jobs          RqJob (a dequeued job), describe (supported or not), Outcome
  intermediate  dequeue.lua: queue -> intermediate list, + the job's fields;
                keep_held, release.lua (back to the queue's head), drop, suspended
  execute       run_job, in the pool processes: one job as RQ's perform_job runs it
  record        start.lua, refresh.lua (leases), finish.lua (the common outcomes)
  rq_worker     RqWorker: the node in RQ's worker registry, and the outcomes
                recorded by RQ's own SimpleWorker code
  maintenance   recover_stuck, RQ's registry cleanup, RQ's scheduler duty
  scripts       loads lua/*.lua;  clock: RQ's time formats

Two paths record an outcome:

- the common case (a job that succeeded and keeps its result, or failed with no
  retries left) goes through ``finish.lua``, many jobs per call;
- every other case (``result_ttl=0``, ``failure_ttl=0``, retries left, a
  ``Retry`` returned, RQ 3's rate limits, a job hash not written by RQ 2.12+ or
  3.x, a cold stop) goes
  through RQ's own ``SimpleWorker`` methods on a worker object named like the
  node, so it is RQ's code that writes.

``tests/test_rq_contract.py`` runs the same jobs through RQ's ``SimpleWorker``
and through a node and compares what each leaves in Redis; CI runs them against
RQ 2 and RQ 3. Supporting a new RQ means: widen ``versions.SUPPORTED`` and the
``rq`` extra in pyproject.toml, rerun those tests with it, put what differs in
``versions``.
"""

# First: without RQ, or with one outside the supported range, a clear error before
# any other module imports RQ.
from worker.sources.rq.adapter.versions import RQ_MAJOR, SUPPORTED, check_version

# isort: split
from worker.sources.rq.adapter.checks import check_server, check_trust, serializer, unpickles
from worker.sources.rq.adapter.clock import now_text
from worker.sources.rq.adapter.execute import RUN_JOB, run_job
from worker.sources.rq.adapter.intermediate import (
    dequeue,
    dequeue_blocking,
    drop,
    keep_held,
    release,
    suspended,
)
from worker.sources.rq.adapter.jobs import (
    CHILD_FIELDS,
    FAILED,
    FETCHED,
    OK,
    RETRY,
    Outcome,
    RqJob,
    describe,
)
from worker.sources.rq.adapter.keys import QueueKeys, worker_key
from worker.sources.rq.adapter.maintenance import Scheduler, clean, recover_stuck
from worker.sources.rq.adapter.record import finish, refresh, start
from worker.sources.rq.adapter.rq_worker import RqWorker
from worker.sources.rq.adapter.scripts import SCRIPT_JOBS

__all__ = [
    "CHILD_FIELDS",
    "FAILED",
    "FETCHED",
    "OK",
    "RETRY",
    "RQ_MAJOR",
    "RUN_JOB",
    "SCRIPT_JOBS",
    "SUPPORTED",
    "Outcome",
    "QueueKeys",
    "RqJob",
    "RqWorker",
    "Scheduler",
    "check_server",
    "check_trust",
    "check_version",
    "clean",
    "dequeue",
    "dequeue_blocking",
    "describe",
    "drop",
    "finish",
    "keep_held",
    "now_text",
    "recover_stuck",
    "refresh",
    "release",
    "run_job",
    "serializer",
    "start",
    "suspended",
    "unpickles",
    "worker_key",
]
