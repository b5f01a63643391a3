"""The RQ releases the adapter supports (2.12 up to 4.0, not included), and what
differs between the two majors in that range.

Imported first by the package: without RQ (``pip install taskfan`` leaves it out;
``pip install 'taskfan[rq]'`` brings it), or with an RQ outside the range, a node
asked for ``--rq-queue`` stops with one line that names the fix, before any other
module of the adapter imports RQ.

Everything else the adapter takes from RQ has the same name and meaning in both
majors. The one private piece is how ``rq.get_current_job()`` finds the running
job: RQ 2 keeps a ``LocalStack`` (``rq.job._job_stack``), RQ 3 a ``ContextVar``
(``rq.job._current_job``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from taskfan.errors import ConfigError

try:
    import rq
    import rq.job
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
