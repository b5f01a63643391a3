"""Typed entry points to the Lua scripts in ``taskfan/lua``.

Each script is loaded from its file once, at import, and called by SHA (redis-py
loads it on NOSCRIPT, and before a pipeline runs). Callers pass a client or a
pipeline; with a pipeline the return value arrives in ``execute()``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from redis.commands.core import Script

from taskfan.keys import GROUP, JobKeys, QueueKeys


def _load(name: str) -> Script:
    text = resources.files("taskfan").joinpath("lua", f"{name}.lua").read_bytes()
    # Given bytes, Script needs no client to compute its SHA; it is run with the
    # client (or pipeline) passed to each call.
    return Script(None, text)  # type: ignore[arg-type]


_RECORD = _load("record")
_SEAL = _load("seal")
_DEAD_LETTER = _load("dead_letter")

RECORDED, ALREADY_RECORDED, JOB_GONE = 1, 0, -1


def record_batch(
    client: Any, job: JobKeys, index: int, entry: bytes, ok: int, failed: int, now: float
) -> Any:
    """Record a batch's result entry once; see lua/record.lua for the return codes."""
    return _RECORD(keys=job.all(), args=[index, entry, ok, failed, repr(now)], client=client)


def seal_job(client: Any, job: JobKeys, total: int, batches: int, now: float) -> Any:
    """Fix a job's size once every batch is sent; see lua/seal.lua."""
    return _SEAL(keys=job.all(), args=[total, batches, repr(now)], client=client)


def dead_letter(
    client: Any,
    queue: QueueKeys,
    entry_id: bytes | str,
    fields: dict[bytes, bytes],
    reason: str,
    now: float,
    maxlen: int = 10_000,
) -> Any:
    """Move a queue entry to the dead-letter stream with ``reason``."""
    flat: list[Any] = []
    for name, value in fields.items():
        flat += [name, value]
    return _DEAD_LETTER(
        keys=[queue.stream, queue.dead],
        args=[entry_id, GROUP, reason, maxlen, repr(now), *flat],
        client=client,
    )
