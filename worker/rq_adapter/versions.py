"""What differs between the RQ majors the adapter supports (2.12+ and 3.x).

Everything else the adapter takes from RQ has the same name and meaning in both.
The one private piece is how ``rq.get_current_job()`` finds the running job: RQ 2
keeps a ``LocalStack`` (``rq.job._job_stack``), RQ 3 a ``ContextVar``
(``rq.job._current_job``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rq.job

RQ_MAJOR = int(rq.__version__.split(".")[0])


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
