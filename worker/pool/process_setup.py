"""Per-process setup inside a pool process: jobs' initializers, and a count of
the chunks the process ran (for ``max_tasks_per_child``).

A node's pool is shared by every job it serves, so a job's initializer
(``Executor(url, initializer=f, initargs=...)``, ``Client.map(...,
initializer=...)``) cannot run when the process starts, as in a
``ProcessPoolExecutor``. The rule instead: **a pool process runs a job's
initializer the first time it is given a chunk of that job**, before the
chunk's first item, and remembers the outcome per job id. A process remembers
the last ``REMEMBERED`` jobs; a job forgotten (after that many other jobs with
an initializer ran there) and met again runs its initializer again there. A
new process (the pool rebuilt after a crash, a hard timeout or a hard cancel,
or replaced under ``max_tasks_per_child``) starts with nothing remembered.

An initializer that raises (or cannot be imported, or is refused by the node's
``--allow`` list, or whose initargs cannot be decoded) does not break the pool:
every item of that job given to that process fails with ``InitializerError``
(a ``BrokenProcessPool``, as the standard library raises for the same fault),
whose message names the initializer, its exception's type and message, and
whose traceback is the initializer's. Other jobs' items in the same process
run as usual; so do the job's items in processes whose initializer succeeded.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from taskfan.boundary import Failure, describe
from taskfan.codec import Codec
from taskfan.errors import InitializerError
from taskfan.refs import resolve

#: jobs whose initializer outcome a pool process remembers (least recent forgotten first)
REMEMBERED = 256

#: job id -> None (its initializer ran) or how it failed, in this process
_jobs: OrderedDict[str, Failure | None] = OrderedDict()
#: chunks this process ran (``run_counted``)
_chunks_run = 0


def initialized(
    job_id: str, ref: str, initargs: bytes, codec: Codec, allow: Sequence[str]
) -> Failure | None:
    """Run the job's initializer in this process unless it ran here already;
    None when it ran, else how it failed (here, now or before)."""
    if job_id in _jobs:
        _jobs.move_to_end(job_id)
        return _jobs[job_id]
    failure: Failure | None = None
    try:
        args = codec.loads(initargs)
        if not isinstance(args, list):
            raise TypeError(f"initargs must be a list, got {type(args).__name__}")
        resolve(ref, tuple(allow))(*args)
    except BaseException as exc:  # the user's code: whatever it raises fails the job's items
        failure = describe(exc)
    _jobs[job_id] = failure
    if len(_jobs) > REMEMBERED:
        _jobs.popitem(last=False)
    return failure


def initializer_error(job_id: str, ref: str, failure: Failure) -> InitializerError:
    """The error every item of the job fails with in this process."""
    return InitializerError(
        f"job {job_id}: its initializer {ref} raised {failure.type}: {failure.message} "
        f"(in pool process {os.getpid()}; this job's items there fail with this error)"
    )


def run_counted(limit: int, run: Any, *args: Any) -> tuple[Any, int]:
    """``run(*args)`` unless this process already ran ``limit`` chunks (then None:
    the chunk was not run, the node sends it again to a new process); and how
    many chunks this process has run, this one included (``max_tasks_per_child``)."""
    global _chunks_run
    if _chunks_run >= limit:
        return None, _chunks_run
    _chunks_run += 1
    return run(*args), _chunks_run
