"""The peers (issue 18): Celery, Dask distributed and Ray beside taskfan.

``python -m benchmarks --peers`` starts each installed peer as a cluster of its
own, in a driver subprocess (``driver``) managed from the suite (``cluster``),
and times it on the same workloads, interleaved with the local pool and
taskfan. Each peer lives in a small module of its own (``celery_peer``,
``dask_peer``, ``ray_peer``); a peer that is not installed is skipped, and the
report says why.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

PEERS = ("celery", "dask", "ray")
#: the modules each peer needs in the suite's environment
REQUIRES = {
    "celery": ("celery", "redis"),
    "dask": ("dask", "distributed"),
    "ray": ("ray",),
}
INSTALL = "pip install -e '.[peers]'"

FindSpec = Callable[[str], Any]


def skip_reason(name: str, find_spec: FindSpec = importlib.util.find_spec) -> str | None:
    """Why peer ``name`` cannot run here, or None when it can."""
    missing = [module for module in REQUIRES[name] if find_spec(module) is None]
    if missing:
        return f"{', '.join(missing)} not installed ({INSTALL})"
    return None


def parse_peers(text: str) -> tuple[str, ...]:
    """``celery,ray`` -> ("celery", "ray"); ValueError names an unknown peer."""
    names = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [name for name in names if name not in PEERS]
    if unknown:
        raise ValueError(f"unknown peers {unknown}: choose from {', '.join(PEERS)}")
    return names


def chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    """``items`` cut into lists of ``size`` (the last may be shorter)."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def run_chunk(items: Sequence[Any]) -> list[float]:
    """What every peer runs per chunk: the seed's task on each item, in order."""
    from benchmarks.tasks import task

    return [task(item) for item in items]


def digest(results: Sequence[Any]) -> str:
    """A short fingerprint of a run's results, compared with the local pool's."""
    return hashlib.sha256(repr([float(value) for value in results]).encode()).hexdigest()
