"""What the ported standard-library tests run on a node: importable by reference.

The names and bodies follow CPython's ``test_concurrent_futures`` helpers; where
one differs, an ``# ADAPTED`` comment says why.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

#: the longest a ``FileEvent.wait`` blocks when given no timeout
WAIT_LIMIT = 60.0


def mul(x: Any, y: Any) -> Any:
    return x * y


def capture(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


class MyObject:
    def my_method(self) -> None:
        pass


def make_dummy_object(_: Any) -> MyObject:
    return MyObject()


def call_my_method(obj: MyObject) -> None:
    # ADAPTED: the stdlib submits the bound method ``obj.my_method``; a node runs
    # functions it imports by reference, so the object travels as an argument.
    obj.my_method()


class FileEvent:
    """A ``threading.Event`` that a node's process can wait on: a file's existence.

    # ADAPTED: the stdlib's ProcessPool tests use a multiprocessing Manager's
    Event; its proxy authenticates with this process's authkey, which a node
    (not our child) does not have. The node shares our disk in the tests.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def set(self) -> None:
        Path(self.path).touch()

    def is_set(self) -> bool:
        return os.path.exists(self.path)

    def wait(self, timeout: float | None = None) -> bool:
        limit = WAIT_LIMIT if timeout is None else min(timeout, WAIT_LIMIT)
        deadline = time.monotonic() + limit
        while not self.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.is_set()


def wait_for(event: FileEvent) -> bool:
    # ADAPTED: the stdlib submits ``event.wait``, a bound method (see call_my_method).
    return event.wait()


def wait_and_raise(e: FileEvent) -> None:
    e.wait()
    raise Exception("this is an exception")


def sleep_and_write(t: float, path: str, msg: str) -> None:
    # ADAPTED: the stdlib's sleep_and_print prints in the pool's process, whose
    # stdout is the test's subprocess's; a node's stdout is not, so the message
    # goes to a file the test reads.
    time.sleep(t)
    Path(path).write_text(msg)


def raise_runtime_error_123() -> None:
    # ADAPTED: the stdlib submits a classmethod of the test case (``_test_traceback``).
    raise RuntimeError(123)  # some comment


# --- test_deadlock's helpers


def _exit() -> None:
    """Induces a sys exit with exitcode 1."""
    sys.exit(1)


def _raise_error(err: type[BaseException]) -> None:
    """Function that raises an Exception in process."""
    raise err()


def _return_instance(cls: type[Any]) -> Any:
    """Function that returns a instance of cls."""
    return cls()


class ExitAtPickle:
    """Bad object that triggers a process exit at pickling time."""

    def __reduce__(self) -> Any:
        _exit()


class ErrorAtPickle:
    """Bad object that triggers an error at pickling time."""

    def __reduce__(self) -> Any:
        raise pickle.PicklingError("Error in pickle")
