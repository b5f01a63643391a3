"""Functions that tasks run in tests; importable by worker nodes and their children."""

from __future__ import annotations

import ctypes
import os
import threading
import time
from pathlib import Path
from typing import Any


def add(a: Any, b: Any) -> Any:
    return a + b


def square(x: float) -> float:
    return x * x


def identity(x: Any) -> Any:
    return x


def noop(x: Any) -> None:
    return None


def fail(x: Any) -> Any:
    raise ValueError(f"bad {x}")


def fail_if_multiple_of_7(x: int) -> int:
    if x % 7 == 0:
        raise ValueError(f"bad {x}")
    return x * 2


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def crash() -> None:
    """Kill the process with SIGSEGV: reading address 0."""
    ctypes.string_at(0)


def exit_now(code: int = 1) -> None:
    """End the process at once, skipping cleanup, as a C extension calling exit() would."""
    os._exit(code)


def crash_on(x: int) -> int:
    """13 segfaults, 31 exits with code 3, anything else comes back unchanged."""
    if x == 13:
        crash()
    if x == 31:
        exit_now(3)
    return x


def spin_on(x: int, bad: int = 3, limit: float = 60.0) -> int:
    """Busy-loop on ``bad`` (up to ``limit`` seconds, for timeouts to cut short); else x."""
    if x == bad:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            pass
    return x


def fail_times(path: str, times: int) -> int:
    """Raise ConnectionError on the first ``times`` calls (counted in the file ``path``).

    Then return the number of calls: a flaky task whose count survives the process.
    """
    counter = Path(path)
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    if calls <= times:
        raise ConnectionError(f"call {calls} of {path} fails ({times} fail)")
    return calls


def pow_task(params: tuple[float, int]) -> float:
    """The seed benchmark task: ``num_calc`` rounds of ``a = a ** a``."""
    v, num_calc = params
    a = float(v)
    for _ in range(num_calc):
        a = pow(a, a)
    return a


def unpicklable_result(x: Any) -> Any:
    """A value no codec can carry: a lock."""
    return threading.Lock()


def kwargs_echo(**kw: Any) -> dict[str, Any]:
    """The keyword arguments, sorted by name."""
    return dict(sorted(kw.items()))


def echo_args(*args: Any, **kwargs: Any) -> list[Any]:
    return [list(args), kwargs]


def pid(x: Any) -> int:
    return os.getpid()


def nap_square(x: int) -> int:
    """x * x after a millisecond's nap: cheap, yet a job of many items lasts a while."""
    time.sleep(0.001)
    return x * x


#: inputs that poison ``poison``: segfault, ``os._exit(3)``, an endless loop
SEGFAULT, EXIT, HANG = -11, -3, -1


def poison(x: int) -> int:
    """x * x, except the poison inputs: SEGFAULT, EXIT (code 3) and HANG (spins for
    ten minutes: forever, as far as a hard timeout is concerned)."""
    if x == SEGFAULT:
        crash()
    if x == EXIT:
        exit_now(3)
    if x == HANG:
        spin_on(HANG, HANG, limit=600.0)
    return x * x


def crash_on_or_fail_7(x: int) -> int:
    """``crash_on`` (13 segfaults, 31 exits), and multiples of 7 raise ValueError."""
    if x % 7 == 0:
        raise ValueError(f"bad {x}")
    return crash_on(x)


def touch(path: str) -> str:
    """Create the file ``path``: a visible side effect, for tasks that must never run."""
    Path(path).write_text("ran")
    return path


def text_of(size: int) -> str:
    """A result of ``size`` characters, from a small input."""
    return "x" * size


def fail_loudly(size: int) -> None:
    """Raise with a message of ``size`` characters."""
    raise ValueError("x" * size)


def fail_then_crash(path: str, poison: bool) -> int:
    """A poison item (``poison``) raises ConnectionError on its first call (counted
    in the file ``path``) and segfaults on every later one: it kills its process
    when it is retried. Any other item returns how many times it was called."""
    counter = Path(path)
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    if poison and calls == 1:
        raise ConnectionError(f"call 1 of {path} fails")
    if poison:
        crash()
    return calls


def slow_first(path: str, seconds: float) -> int:
    """Spin ``seconds`` on the first call (counted in the file ``path``: past a soft
    timeout), return at once after; the number of calls."""
    counter = Path(path)
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    if calls == 1:
        spin_on(0, 0, limit=seconds)
    return calls


def count_until(path: str, release: str, limit: float = 60.0) -> int:
    """Count the call in the file ``path``, then wait (at most ``limit`` seconds)
    until the file ``release`` exists; the number of calls."""
    counter = Path(path)
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    deadline = time.monotonic() + limit
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return calls
