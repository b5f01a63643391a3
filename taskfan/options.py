"""How a node runs each item of a job: the call mode and the task options.

Both travel in every batch entry (fields ``m`` and ``o``, ``taskfan.protocol``)
and in the job's meta hash (``taskfan.meta``); ``call`` is what a pool process
does with one item.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass
from typing import Any

from taskfan.bounds import (
    MAX_BACKOFF,
    MAX_NAME,
    MAX_RETRIES,
    MAX_RETRY_ON,
    MAX_TIMEOUT,
    MIN_TIMEOUT,
    count_problem,
    seconds_problem,
    shown,
)
from taskfan.errors import ProtocolError


class CallMode(str, enum.Enum):
    """How a node calls the function with one item."""

    ONE = "1"  #: fn(item)
    ARGS = "a"  #: fn(*item), like itertools.starmap
    CALL = "c"  #: fn(*item[0], **item[1]); used by submit(fn, *args, **kwargs)
    STAR = "s"  #: a list is fn(*item), a dict is fn(**item), anything else fn(item)


def call(fn: Any, mode: CallMode, item: Any) -> Any:
    if mode is CallMode.ONE:
        return fn(item)
    if mode is CallMode.ARGS:
        return fn(*item)
    if mode is CallMode.CALL:
        args, kwargs = item
        return fn(*args, **kwargs)
    if isinstance(item, dict):
        return fn(**item)
    if isinstance(item, (list, tuple)):
        return fn(*item)
    return fn(item)


@dataclass(frozen=True)
class TaskOptions:
    """How a node runs each item of a job."""

    #: soft limit, seconds: TimeoutError is raised inside the task
    timeout: float | None = None
    #: hard limit, seconds: the node kills the process running the item
    hard_timeout: float | None = None
    #: extra attempts for an item that raised
    retries: int = 0
    #: exception type names that may be retried (any name in the type's MRO); empty: all
    retry_on: tuple[str, ...] = ()
    #: first backoff, seconds; doubles per attempt, with jitter, up to backoff_max
    backoff: float = 0.1
    backoff_max: float = 10.0

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise ValueError(problem)

    def _problem(self) -> str | None:
        """What is out of bounds (``taskfan.bounds``), naming the option and its
        value; or None. Each of these reaches a timer, a deadline or the retry
        heap of a node."""
        for name in ("timeout", "hard_timeout"):
            value = getattr(self, name)
            if value is not None and (
                problem := seconds_problem(name, value, MAX_TIMEOUT, least=MIN_TIMEOUT)
            ):
                return problem
        problem = count_problem("retries", self.retries, 0, MAX_RETRIES)
        for name in ("backoff", "backoff_max"):
            problem = problem or seconds_problem(name, getattr(self, name), MAX_BACKOFF)
        if problem:
            return problem
        names = self.retry_on
        if not isinstance(names, tuple) or not all(isinstance(name, str) for name in names):
            return f"retry_on must be exception type names, got {shown(names)}"
        if len(names) > MAX_RETRY_ON or any(not 0 < len(n) <= MAX_NAME for n in names):
            return (
                f"retry_on must be at most {MAX_RETRY_ON} exception type names of 1 to "
                f"{MAX_NAME} characters, got {shown(names)}"
            )
        return None

    @property
    def is_default(self) -> bool:
        return self == DEFAULT_OPTIONS

    def encode(self) -> str:
        data = {
            k: v for k, v in dataclasses.asdict(self).items() if getattr(DEFAULT_OPTIONS, k) != v
        }
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str | bytes, where: str) -> TaskOptions:
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if isinstance(data.get("retry_on"), list):
                data["retry_on"] = tuple(data["retry_on"])
            return cls(**data)
        except (ValueError, TypeError, RecursionError) as exc:
            shown = text[:200] if isinstance(text, (str, bytes)) else text
            raise ProtocolError(f"{where}: bad task options {shown!r}: {exc}") from None


DEFAULT_OPTIONS = TaskOptions()
