"""Functions for the initializer tests (``test_initializer``, ``test_stdlib_init``):
a node's pool processes import them, so they live in a module of their own."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

INITIALIZER_STATUS = "uninitialized"
#: initializer calls in this process, per argument
CALLS: dict[Any, int] = {}


def init(x: Any) -> None:
    global INITIALIZER_STATUS
    INITIALIZER_STATUS = x
    CALLS[x] = CALLS.get(x, 0) + 1


def get_init_status(*args: Any) -> Any:
    return INITIALIZER_STATUS


def init_calls(x: Any) -> int:
    """How many times ``init(x)`` ran in this process."""
    return CALLS.get(x, 0)


def init_fail(log_queue: Any = None) -> None:
    time.sleep(0.1)  # let some futures be scheduled
    raise ValueError("error in initializer")


def touch_init(path: str) -> None:
    """An initializer with a visible side effect: one line per run, with the pid."""
    with Path(path).open("a") as file:
        file.write(f"{os.getpid()}\n")


def mul(x: Any, y: Any) -> Any:
    return x * y


def pid_and_status(x: Any) -> tuple[int, Any]:
    return os.getpid(), INITIALIZER_STATUS


def status_after_failing(path: str) -> Any:
    """Raise on the first call (counted in the file ``path``); then the status."""
    counter = Path(path)
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    if calls == 1:
        raise ValueError("first call fails")
    return INITIALIZER_STATUS


class _Unprintable(BaseException):
    """A BaseException of the initializer's own whose ``str()`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no str")


def init_system_exit() -> None:
    raise SystemExit(4)


def init_keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def init_unprintable() -> None:
    raise _Unprintable


def init_exit_process() -> None:
    """Ends its pool process, as a crash does."""
    os._exit(3)
