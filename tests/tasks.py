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


def _write_count(counter: Path, calls: int) -> None:
    """Written aside and renamed: a reader (a test, or another process counting)
    never sees the count half-written."""
    partial = counter.with_name(f"{counter.name}.{os.getpid()}.partial")
    partial.write_text(str(calls))
    partial.replace(counter)


def fail_times(path: str, times: int) -> int:
    """Raise ConnectionError on the first ``times`` calls (counted in the file ``path``).

    Then return the number of calls: a flaky task whose count survives the process.
    """
    counter = Path(path)
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    _write_count(counter, calls)
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


def slow_square(x: int) -> int:
    """x * x after 20 ms of sleep: throughput follows the processes, not this machine's CPUs."""
    time.sleep(0.02)
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


def append_tag(item: tuple[str, str]) -> str:
    """Append ``tag`` as a line to the file ``path`` (``item`` is ``(path, tag)``):
    the order items ran in, on a node of one process."""
    path, tag = item
    with open(path, "a") as file:
        file.write(tag + "\n")
    return tag


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
    _write_count(counter, calls)
    deadline = time.monotonic() + limit
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return calls


# ------------------------------------------------------------- hostile tasks
# Tasks that misbehave the ways a user's code can: raise what is not an
# Exception, raise exceptions that cannot be printed or read back, return values
# that cannot be pickled, unpickled, or imported where they are read. ``hostile``
# runs one of them by its input; HOSTILE says how each must end.


class CustomBaseError(BaseException):
    """A BaseException of a task's own, not an Exception."""


class BadStrError(Exception):
    """An exception that cannot be printed: its __str__ raises."""

    def __str__(self) -> str:
        raise RuntimeError("BadStrError.__str__ raised")


class BadReprError(Exception):
    """An exception whose __repr__ raises."""

    def __repr__(self) -> str:
        raise RuntimeError("BadReprError.__repr__ raised")


class ExitingStrError(Exception):
    """An exception whose __str__ raises SystemExit."""

    def __str__(self) -> str:
        raise SystemExit("ExitingStrError.__str__ exits")


class TwoArgError(Exception):
    """Pickles (its args are one message), cannot be unpickled: __init__ takes two."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"code {code}: {detail}")


def _refuse_rebuild(x: Any) -> Any:
    raise ValueError(f"RebuildRaises({x!r}) refuses to be unpickled")


class RebuildRaises:
    """A value that pickles, and whose unpickling raises."""

    def __init__(self, x: Any) -> None:
        self.x = x

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse_rebuild, (self.x,))


class RebuildsWrongly:
    """A value whose __reduce__ rebuilds it wrongly: without the argument __init__ needs."""

    def __init__(self, x: Any) -> None:
        self.x = x

    def __reduce__(self) -> tuple[Any, ...]:
        return (RebuildsWrongly, ())


class PickleExits:
    """A value whose pickling raises SystemExit (inside the pool process)."""

    def __reduce__(self) -> tuple[Any, ...]:
        raise SystemExit("PickleExits.__reduce__ exits")


#: the module ``node_only`` writes and imports: only the node's processes have it
NODE_ONLY_MODULE = "taskfan_node_only_types"


def node_only(kind: str) -> Any:
    """A value ("value") or an exception ("error") of a class from a module that
    only the node's process can import: a reader elsewhere cannot unpickle it."""
    import importlib
    import sys
    import tempfile

    folder = Path(tempfile.gettempdir()) / f"taskfan-node-only-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    source = folder / f"{NODE_ONLY_MODULE}.py"
    text = (
        "class NodeOnlyValue:\n    def __init__(self, x):\n        self.x = x\n\n"
        "class NodeOnlyError(Exception):\n    pass\n"
    )
    if not source.exists() or source.read_text() != text:
        tmp = folder / f".{os.getpid()}.tmp"
        tmp.write_text(text)
        tmp.replace(source)
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    module = importlib.import_module(NODE_ONLY_MODULE)
    if kind == "error":
        raise module.NodeOnlyError("raised with a class only the node can import")
    return module.NodeOnlyValue(kind)


#: inputs of ``hostile``; any other input x returns x * x
SYS_EXIT = -101  #: sys.exit(3)
SYSTEM_EXIT = -102  #: raise SystemExit("...")
KEYBOARD_INTERRUPT = -103
GENERATOR_EXIT = -104
CUSTOM_BASE = -105  #: raise CustomBaseError
PICKLE_EXITS = -106  #: returns a value whose pickling raises SystemExit
BAD_STR = -107  #: raises BadStrError
BAD_REPR = -108  #: raises BadReprError
EXITING_STR = -109  #: raises ExitingStrError
TWO_ARG_ERROR = -110  #: raises TwoArgError (cannot be unpickled)
REBUILD_RAISES = -111  #: returns RebuildRaises (cannot be unpickled)
REBUILDS_WRONGLY = -112  #: returns RebuildsWrongly (cannot be unpickled)
NODE_ONLY_VALUE = -113  #: returns a value of a class the reader cannot import
NODE_ONLY_ERROR = -114  #: raises an exception of a class the reader cannot import

#: how each hostile input ends, as the reader sees it: the type name of its
#: error (each fails; a good item's value is x * x). Under the json codec the
#: values that only pickle fails (REBUILD_RAISES, ...) fail with EncodeError.
HOSTILE: dict[int, str] = {
    SYS_EXIT: "SystemExit",
    SYSTEM_EXIT: "SystemExit",
    KEYBOARD_INTERRUPT: "KeyboardInterrupt",
    GENERATOR_EXIT: "GeneratorExit",
    CUSTOM_BASE: "CustomBaseError",
    PICKLE_EXITS: "EncodeError",
    BAD_STR: "BadStrError",
    BAD_REPR: "BadReprError",
    EXITING_STR: "ExitingStrError",
    TWO_ARG_ERROR: "TwoArgError",
    REBUILD_RAISES: "UnreadableResult",
    REBUILDS_WRONGLY: "UnreadableResult",
    NODE_ONLY_VALUE: "UnreadableResult",
    NODE_ONLY_ERROR: "NodeOnlyError",
}


def hostile(x: int) -> Any:
    """x * x, except the HOSTILE inputs, which misbehave as their names say."""
    import sys

    if x == SYS_EXIT:
        sys.exit(3)
    if x == SYSTEM_EXIT:
        raise SystemExit("the task called SystemExit")
    if x == KEYBOARD_INTERRUPT:
        raise KeyboardInterrupt
    if x == GENERATOR_EXIT:
        raise GeneratorExit("the task raised GeneratorExit")
    if x == CUSTOM_BASE:
        raise CustomBaseError("a BaseException of the task's own")
    if x == PICKLE_EXITS:
        return PickleExits()
    if x == BAD_STR:
        raise BadStrError("unprintable")
    if x == BAD_REPR:
        raise BadReprError("no repr")
    if x == EXITING_STR:
        raise ExitingStrError("exits when printed")
    if x == TWO_ARG_ERROR:
        raise TwoArgError(7, "two arguments")
    if x == REBUILD_RAISES:
        return RebuildRaises(x)
    if x == REBUILDS_WRONGLY:
        return RebuildsWrongly(x)
    if x == NODE_ONLY_VALUE:
        return node_only("value")
    if x == NODE_ONLY_ERROR:
        node_only("error")
    return x * x


#: the input of ``hostile_or_crash`` that ends the process running it
CRASH = -199


def hostile_or_crash(x: int) -> Any:
    """``hostile``, and CRASH ends its process at once (``os._exit(3)``)."""
    if x == CRASH:
        exit_now(3)
    return hostile(x)


class _Mark:
    """Unpickling this creates the file ``path``: the mark of code run by a pickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def mark_when_unpickled(path: str) -> Any:
    """A result whose unpickling (by a reader) creates the file ``path``."""
    return _Mark(path)


class ExitsWhenRepickled:
    """An input that pickles in the producer and, once unpickled (on the node),
    raises SystemExit when it is pickled again: on its way to the pool."""

    def __init__(self, x: Any, loaded: bool = False) -> None:
        self.x = x
        self.loaded = loaded

    def __reduce__(self) -> tuple[Any, ...]:
        if self.loaded:
            raise SystemExit("ExitsWhenRepickled pickled a second time")
        return (ExitsWhenRepickled, (self.x, True))


def _second_load(x: Any, loads: int) -> Any:
    if loads >= 2:
        raise SystemExit("ExitsWhenUnpickledTwice unpickled a second time")
    return ExitsWhenUnpickledTwice(x, loads)


class ExitsWhenUnpickledTwice:
    """An input that unpickles once (on the node) and raises SystemExit when it
    is unpickled again: in the pool process."""

    def __init__(self, x: Any, loads: int = 0) -> None:
        self.x = x
        self.loads = loads

    def __reduce__(self) -> tuple[Any, ...]:
        return (_second_load, (self.x, self.loads + 1))


def _interrupt() -> Any:
    raise KeyboardInterrupt


class InterruptsWhenRead:
    """A value whose unpickling raises KeyboardInterrupt (where it is read). Not
    in HOSTILE: a reader's main thread lets a KeyboardInterrupt through."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_interrupt, ())


def interrupts_when_read(x: int) -> Any:
    """InterruptsWhenRead for a negative x, else x * x."""
    return InterruptsWhenRead() if x < 0 else x * x


def _raise_exiting_str() -> Any:
    raise ExitingStrError("raised while the node unpickles the batch")


class ExitingStrWhenRead:
    """An input whose unpickling (on the node) raises ExitingStrError, an
    exception whose __str__ raises SystemExit."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_raise_exiting_str, ())


def scaled(x: float, k: float = 1, offset: float = 0) -> float:
    """For ``functools.partial(scaled, k=...)`` (tests/test_callables.py)."""
    return x * k + offset


class Scorer:
    """A callable instance: ``Scorer(3)(x)``."""

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def __call__(self, x: float) -> float:
        return x * self.weight


class Model:
    """Bound, static and class methods."""

    def __init__(self, bias: float) -> None:
        self.bias = bias

    def predict(self, x: float) -> float:
        return x + self.bias

    @staticmethod
    def double(x: float) -> float:
        return 2 * x

    @classmethod
    def tag(cls, x: Any) -> str:
        return f"{cls.__name__}:{x}"


#: how long a thread ``stray_thread`` leaves behind lives (bounded: a test's leak ends)
STRAY_SECONDS = 600.0


def stray_thread(x: Any) -> Any:
    """Return ``x``, leaving a non-daemon thread behind: the process it ran in
    cannot exit (Python joins such threads at exit) until the thread ends."""
    threading.Thread(target=threading.Event().wait, args=(STRAY_SECONDS,)).start()
    return x


def frozen_objects(x: Any) -> int:
    """How many objects this process's garbage collector leaves alone for good
    (``gc.freeze``): the pool process's start-up objects, once it froze them."""
    import gc

    return gc.get_freeze_count()
