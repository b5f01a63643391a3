"""The RQ releases the adapter supports (2.12 up to 4.0, not included), and what
differs between the two majors in that range.

Imported first by the package: without RQ (``pip install taskfan`` leaves it out;
``pip install 'taskfan[rq]'`` brings it), or with an RQ outside the range, a node
asked for ``--rq-queue`` stops with one line that names the fix, before any other
module of the adapter imports RQ.

Everything else the adapter takes from RQ has the same name and meaning in both
majors. What differs, all here (the Lua scripts get ``RQ_MAJOR`` and branch on
``RQ3`` where noted in their headers):

- how ``rq.get_current_job()`` finds the running job, a private piece: RQ 2
  keeps a ``LocalStack`` (``rq.job._job_stack``), RQ 3 a ``ContextVar``
  (``rq.job._current_job``) (``enter_job``);
- where RQ says which jobs a worker runs: RQ 2 in the worker's hash
  (``current_job``, ``current_job_working_time``; ``WORKER_CURRENT_JOB``), RQ 3 in
  a set of the worker's executions (``rq:worker:NAME:executions``,
  ``worker_executions_key``) and in each Execution's hash (its ``job_id``);
- RQ 3 renews an execution's entry in the job's execution registry only if it is
  still there (ZADD XX);
- RQ 3's worker methods that record an outcome take the execution as an argument,
  RQ 2's read it from the worker (``execution_argument``);
- RQ 3 cleans the group registries once per maintenance interval among all
  workers, under a lock key (``clean_groups``);
- RQ 3 runs a returned coroutine with ``asyncio.run``, RQ 2 on a new event loop
  it leaves open (``run_coroutine``);
- RQ 3 has rate limits (``Queue.enqueue(..., rate_limit=...)``): a rate-limited
  job frees its slot when it ends, which RQ's own code does (``jobs.RqJob.fast``
  sends such jobs there; RQ 2 never writes the field).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from taskfan.errors import ConfigError

try:
    import redis
    import rq
    import rq.executions
    import rq.job
    from rq.defaults import DEFAULT_MAINTENANCE_TASK_INTERVAL
    from rq.group import Group
    from rq.worker import SimpleWorker
except ImportError as exc:
    raise ConfigError(
        f"draining RQ queues (--rq-queue) needs RQ, an optional extra of taskfan ({exc}): "
        "pip install 'taskfan[rq]'"
    ) from None

# The releases the adapter and its contract tests (tests/test_rq_contract.py) were
# written for: from this one up to, not including, the last. Keep it in step with
# the `rq` extra in pyproject.toml.
SUPPORTED = ((2, 12), (4, 0))


def check_version(version: str | None = None) -> None:
    version = rq.__version__ if version is None else version
    try:
        found = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        found = (0, 0)
    low, high = SUPPORTED
    if not low <= found < high:
        raise ConfigError(
            f"taskfan's RQ adapter supports rq {low[0]}.{low[1]} up to {high[0]}.0 (not "
            f"included), but rq {version} is installed: pip install 'taskfan[rq]'"
        )


check_version()

RQ_MAJOR = int(rq.__version__.split(".")[0])
RQ3 = RQ_MAJOR >= 3

#: RQ 2 names a busy worker's job in its hash (current_job, current_job_working_time)
WORKER_CURRENT_JOB = not RQ3


def worker_executions_key(name: str) -> str:
    """RQ 3's set of a worker's running executions ("JOB:EXECUTION"). RQ 2 has none:
    the scripts get the same name and leave it alone."""
    template = vars(rq.executions).get("WORKER_EXECUTIONS_KEY_TEMPLATE")
    if template is None:  # RQ 2
        return f"{SimpleWorker.redis_worker_namespace_prefix}{name}:executions"
    return str(template).format(name)


def execution_argument(execution: Any) -> dict[str, Any]:
    """What RQ's handle_job_success and handle_job_failure take besides the job:
    RQ 3 the execution itself, RQ 2 nothing (it reads ``worker.execution``)."""
    return {"execution": execution} if RQ3 else {}


def clean_groups(client: redis.Redis) -> None:
    """RQ's cleanup of the group registries, as its worker does it."""
    # RQ 3: once per RQ's default maintenance interval among all workers and nodes,
    # whoever takes the lock; RQ 2: every time
    lock = getattr(Group, "acquire_maintenance_lock", None)
    if lock is None or lock(client, max(DEFAULT_MAINTENANCE_TASK_INTERVAL - 1, 1)):
        Group.clean_registries(connection=client)


def run_coroutine(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """What a job that returned a coroutine returns, run as RQ's Job._execute runs it."""
    if RQ3:
        return asyncio.run(coroutine)
    return asyncio.new_event_loop().run_until_complete(coroutine)


def enter_job(job: Any) -> Callable[[], None]:
    """Make ``job`` what ``rq.get_current_job()`` returns; call the result to undo it."""
    names = vars(rq.job)  # either name is missing in the other major, for mypy too
    current = names.get("_current_job")
    if current is not None:  # RQ 3
        token = current.set(job)
        return lambda: current.reset(token)
    # RQ 2. The list push returns is popped directly: LocalStack.pop would release
    # it when it empties, and each job would build it anew.
    stack = names["_job_stack"].push(job)
    pop: Callable[[], None] = stack.pop
    return pop
