"""Functions that RQ jobs run in tests, importable by RQ workers, nodes and pool processes."""

from __future__ import annotations

import functools
import json
import pickle
import time
from typing import Any

from rq import Retry, get_current_job


def double(x: Any) -> Any:
    return x * 2


def echo(x: Any) -> Any:
    return x


def nothing() -> None:
    return None


def boom(x: Any) -> Any:
    raise ValueError(f"bad {x}")


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def busy(seconds: float) -> float:
    """Spin (no sleep) for ``seconds``: only a signal can stop it early."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return seconds


def unpicklable() -> Any:
    return lambda: None


def ask_retry(times: int) -> Any:
    """Return a Retry until the job ran ``times`` times (RQ's return-based retries)."""
    job = get_current_job()
    assert job is not None
    if (job.number_of_retries or 0) < times:
        return Retry(max=times + 5)
    return "done"


def always_retry() -> Any:
    return Retry(max=2)


def whoami() -> Any:
    """What RQ's get_current_job() says about the running job."""
    job = get_current_job()
    assert job is not None
    return [job.id, job.origin, list(job.args)]


def save_meta() -> None:
    job = get_current_job()
    assert job is not None
    job.meta["progress"] = 1
    job.save_meta()


async def coroutine(x: Any) -> Any:
    return x + 1


class Adder:
    def __init__(self, base: int) -> None:
        self.base = base

    def add(self, x: int) -> int:
        return self.base + x


def on_success(job: Any, connection: Any, result: Any) -> None:
    pass


def fail_once(path: str) -> str:
    """Fail the first time (leaving ``path``), succeed afterwards."""
    import os

    if not os.path.exists(path):
        with open(path, "w"):
            pass
        raise RuntimeError("first attempt fails")
    return "second attempt"


class PlainJson:
    """A serializer that never unpickles, under a name that is not RQ's."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    @staticmethod
    def loads(data: bytes) -> Any:
        return json.loads(data)


class Renamed:
    """RQ's pickle serializer under another name: it unpickles all the same."""

    dumps = staticmethod(functools.partial(pickle.dumps, protocol=pickle.HIGHEST_PROTOCOL))
    loads = staticmethod(pickle.loads)
