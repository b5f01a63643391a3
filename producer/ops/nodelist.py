"""The node registry as ``taskfan nodes``, ``status`` and the dashboard show it.

Nodes write their records (``keys.node``) and the ``nodes`` index, but anyone
who can write to Redis can change them: a record's counters are read as 0 when
they are not numbers, its times as None when they are not finite, and an index
entry that cannot be a node id, or whose heartbeat is not a finite time, is
skipped and named (``producer.ops.skipped``) and leaves the index with the records
that expired.
"""

from __future__ import annotations

import json
from typing import Any

from producer.ops.skipped import Skipped, finite, shown
from taskfan import keys
from taskfan.connection import RedisClient

#: integer fields of a node record
_NODE_INTS = (
    "pid", "processes", "items_done", "items_failed", "batches_done", "batches_failed",
    "batches_dead", "reclaims", "pool_restarts", "in_flight", "busy", "retrying", "items_retried",
)  # fmt: skip
#: largest counter shown; above it a field is not what a node wrote
_MOST = 2**63 - 1
#: longest list of names (queues, allowed modules) read from a node record
_LONGEST = 64 * 1024


def _names(field: str | None) -> list[str]:
    """Queue names of a node record: a JSON list, or the comma-separated string
    older nodes wrote (still read, for a rolling upgrade)."""
    if not field:
        return []
    if len(field) > _LONGEST:  # no node writes that much: show its start
        return [shown(field)]
    try:
        names = json.loads(field)
    except (ValueError, RecursionError):
        return field.split(",")
    return [str(name) for name in names] if isinstance(names, list) else [str(names)]


def _reasons(field: str | None) -> dict[str, str]:
    """A node record's ``cannot_run``: function -> why that node cannot run it
    (``worker.core.unrunnable``); {} when missing or unreadable."""
    try:
        found = json.loads(field) if field and len(field) < 65536 else {}
    except (ValueError, RecursionError):
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _int(value: str | None) -> int:
    """A counter of a node record; 0 when missing or not a number."""
    try:
        number = int(value) if value is not None else 0
    except ValueError:
        return 0
    return number if -_MOST <= number <= _MOST else 0


def posture(record: dict[str, str]) -> dict[str, Any]:
    """What a node accepts, from its record: ``signed`` (the key id it signs
    with; None: unsigned batches accepted), ``pickle`` ("accepted", "refused";
    None from a node too old to say) and ``allow`` (its allowlist; []: any
    function), with ``open`` true when it runs unsigned pickle batches, and
    ``accepts``, all of it in a few words."""
    signed = (record.get("signed") or "")[:16] or None
    pickle = record.get("pickle") if record.get("pickle") in ("accepted", "refused") else None
    found: dict[str, Any] = {
        "signed": signed,
        "pickle": pickle,
        "allow": _names(record.get("allow")),
        "open": signed is None and pickle == "accepted",
    }
    found["accepts"] = accepts(found)
    return found


def accepts(node: dict[str, Any]) -> str:
    """A node's security posture in a few words: ``signed 1a2b3c4d, no pickle,
    allow myapp``; ``OPEN (unsigned, pickle)`` for one that runs anything."""
    if node.get("pickle") is None and node.get("signed") is None:
        return "?"  # a node too old to say
    if node.get("open"):
        parts = ["OPEN (unsigned, pickle)"]
    else:
        parts = [f"signed {node['signed']}" if node.get("signed") else "unsigned"]
        parts.append("no pickle" if node.get("pickle") == "refused" else "pickle")
    allow = node.get("allow") or []
    parts.append(f"allow {','.join(allow)}" if allow else "any function")
    return ", ".join(parts)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _listed(r: RedisClient, skipped: list[Skipped]) -> tuple[list[tuple[str, float]], list[Any]]:
    """The index's entries that can be nodes, as (id, heartbeat); and the rest."""
    listed: Any = r.zrevrange(keys.NODES, 0, -1, withscores=True)
    entries, dropped = [], []
    for raw_id, beat in listed:
        try:
            node_id = raw_id.decode("utf-8") if isinstance(raw_id, bytes) else str(raw_id)
            keys.node(node_id)
        except ValueError:  # not UTF-8, or not a name: someone else wrote it
            skipped.append(Skipped("node", shown(raw_id), "not a node id (left the index)"))
            dropped.append(raw_id)
            continue
        if finite(beat) is None:
            skipped.append(Skipped("node", shown(raw_id), f"heartbeat {beat} is not a time"))
            continue
        entries.append((node_id, beat))
    return entries, dropped


def nodes(r: RedisClient, now: float, skipped: list[Skipped] | None = None) -> list[dict[str, Any]]:
    """Live nodes, newest heartbeat first. A node whose record expired (it stopped
    beating three heartbeats ago: killed, cut off, or stopped) leaves the index."""
    skipped = [] if skipped is None else skipped
    entries, dead = _listed(r, skipped)
    pipe = r.pipeline(transaction=False)
    for node_id, _ in entries:
        pipe.hgetall(keys.node(node_id))
    out = []
    for (node_id, beat), raw in zip(entries, pipe.execute(), strict=True):
        if not raw:
            dead.append(node_id)
            continue
        record = {_text(k): _text(v) for k, v in raw.items()}
        node: dict[str, Any] = {
            "id": node_id,
            "alive": True,
            "host": record.get("host"),
            "version": record.get("version"),
            "chunksize": record.get("chunksize"),
            "queues": _names(record.get("queues")),
            "rq_queues": _names(record.get("rq_queues")),
            "started_at": finite(record.get("started_at")),
            "last_heartbeat": beat,
            "seconds_since_heartbeat": round(now - beat, 1),
            "rate": finite(record.get("rate")) or 0.0,
            "jobs": record["jobs"].split(",") if record.get("jobs") else [],
            "metrics": record.get("metrics"),
            **posture(record),
            "cannot_run": _reasons(record.get("cannot_run")),
        }
        for name in _NODE_INTS:
            node[name] = _int(record.get(name))
        out.append(node)
    if dead:
        r.zrem(keys.NODES, *dead)
    return out
