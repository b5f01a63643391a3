"""Typed entry points to the Lua scripts in ``taskfan/lua``.

Each script is read from its file once, at import, and called by SHA. Called on a
client, a missing script is loaded and the call retried. Called on a pipeline,
the call is queued as a bare EVALSHA (redis-py would otherwise add a SCRIPT
EXISTS round trip to every ``execute()``): call ``load_all`` first, and on
``redis.exceptions.NoScriptError`` (a restarted or flushed server) load again
and re-run the pipeline; every script here is safe to run twice.

On a Redis Cluster, ``load_all`` loads every script on every primary, and a
cluster pipeline routes each EVALSHA by its keys, which share one slot. A
failover or a resharding can still land a call on a primary that lacks the
script: the same NoScriptError, handled the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.client import Pipeline
from redis.cluster import ClusterPipeline
from redis.commands.core import Script
from redis.exceptions import NoPermissionError

from taskfan.connection import RedisClient
from taskfan.errors import ConfigError
from taskfan.keys import GROUP, HANDED_BACK, JobKeys, QueueKeys


def _read(name: str) -> bytes:
    return (resources.files("taskfan") / "lua" / f"{name}.lua").read_bytes()


def _load(name: str, *prelude: str) -> Script:
    """A script from its file, with shared Lua functions (``_*.lua``) in front."""
    text = b"".join([*map(_read, prelude), _read(name)])
    # Given bytes, Script needs no client to compute its SHA; it is run with the
    # client (or pipeline) passed to each call.
    return Script(None, text)  # type: ignore[arg-type]


_RECORD = _load("record", "_end_job", "_rounds")
_SEAL = _load("seal", "_end_job")
_CANCEL = _load("cancel", "_end_job")
_RETRY = _load("retry", "_rounds")
_DEAD_LETTER = _load("dead_letter")
_REQUEUE = _load("requeue", "_rounds")
_OPEN_ROUND = _load("open_round", "_rounds")
_LEASE = _load("lease")
_ABANDON = _load("abandon", "_end_job")
_RELEASE = _load("release")
_CANCEL_CALL = _load("cancel_call")
_STARTED = _load("started")

RECORDED, ALREADY_RECORDED, JOB_GONE, JOB_CANCELLED, ROUND_VOID = 1, 0, -1, -2, -3
#: what record.lua answers when the record finished its job
RECORDED_LAST = 2
#: what seal.lua and lease.lua answer for a job whose enqueue lease lapsed
JOB_ABANDONED = -2


_ALL = (_RECORD, _SEAL, _DEAD_LETTER, _CANCEL, _RETRY, _REQUEUE, _OPEN_ROUND, _LEASE, _ABANDON,
        _RELEASE, _CANCEL_CALL, _STARTED)  # fmt: skip

#: what to do when a least-privilege user finds the scripts missing
LOAD_HINT = (
    "taskfan's Lua scripts are not loaded in this Redis, and this user may not load "
    "them (the ACL roles of `taskfan acl` grant EVALSHA but not SCRIPT LOAD, so that "
    "they cannot run Lua of their own): load them as an admin with `taskfan acl "
    "--load-scripts --redis-url ADMIN_URL`, after every Redis restart or SCRIPT FLUSH "
    "(docs/scaling.md)"
)


def load_all(client: RedisClient) -> None:
    """Load every script into the server (every primary of a cluster), so
    pipelines can call them by SHA. A user who may not load scripts (the ACL
    roles) goes on when an admin loaded them already, and gets ConfigError with
    the fix when not. Asks first (SCRIPT EXISTS), so such a user causes no
    refusal in ACL LOG."""
    try:
        loaded = client.script_exists(*(script.sha for script in _ALL))
        for script, there in zip(_ALL, loaded, strict=True):
            if not there:
                client.script_load(script.script)
    except NoPermissionError:
        raise ConfigError(LOAD_HINT) from None


def _run(script: Script, client: RedisClient, keys: list[str], args: list[Any]) -> Any:
    if isinstance(client, (Pipeline, ClusterPipeline)):
        # execute_command: redis-py refuses ClusterPipeline.evalsha by name, but
        # routes the command itself by its keys (all in one slot here).
        return client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    try:
        return script(keys=keys, args=args, client=client)
    except NoPermissionError as exc:
        if "script" not in str(exc).lower():
            raise
        raise ConfigError(LOAD_HINT) from None


def record_batch(
    client: RedisClient,
    job: JobKeys,
    field: int | str,
    entry: bytes,
    ok: int,
    failed: int,
    now: float,
) -> Any:
    """Record a batch's result entry once, in ``field`` (the batch index, or
    ``"<index>.<round>"`` for a retry); see lua/record.lua for the return codes."""
    return _run(_RECORD, client, list(job.all()), [field, entry, ok, failed, repr(now)])


def seal_job(
    client: RedisClient,
    job: JobKeys,
    total: int,
    batches: int,
    now: float,
    signature: str | None = None,
) -> Any:
    """Fix a job's size once every batch is sent, with the signature of the totals
    (``Keyring.sign_totals``) when the producer has a secret; see lua/seal.lua."""
    return _run(_SEAL, client, list(job.all()), [total, batches, repr(now), signature or ""])


def cancel_job(client: RedisClient, job: JobKeys, now: float, terminate: bool = False) -> Any:
    """Cancel an active job; ``terminate``: nodes also kill the processes running
    its items (a hard cancel). See lua/cancel.lua for the return codes."""
    return _run(_CANCEL, client, list(job.all()), [repr(now), "1" if terminate else "0"])


def cancel_call(client: RedisClient, queue: QueueKeys, entry_id: bytes | str) -> bool:
    """Delete a queued entry no node has read yet, or that a node handed back
    unrun; False when a node holds it (it runs, or ran) or it is gone
    (lua/cancel_call.lua)."""
    reply = _run(_CANCEL_CALL, client, [queue.stream], [GROUP, entry_id, HANDED_BACK])
    return bool(reply == 1)


def mark_started(
    client: RedisClient, job: JobKeys, batches: Sequence[bytes | str], handed_back: bool = False
) -> Any:
    """Add a "started" event (``s=``) per batch to an active job, or with
    ``handed_back`` a "handed back" one (``h=``) (lua/started.lua)."""
    kind = "h" if handed_back else "s"
    return _run(_STARTED, client, [job.meta, job.events], [kind, *batches])


def renew_lease(client: RedisClient, job: JobKeys, seconds: float) -> Any:
    """Renew the enqueue lease of an unsealed job for ``seconds`` (server clock);
    see lua/lease.lua for the return codes (JOB_ABANDONED: too late)."""
    return _run(_LEASE, client, [job.meta], [repr(float(seconds))])


def abandon_if_lapsed(client: RedisClient, job: JobKeys) -> str:
    """End the job as abandoned when its enqueue lease lapsed (idempotent); its
    state afterwards: enqueuing, active, finished, cancelled, abandoned or gone
    (lua/abandon.lua)."""
    reply = _run(_ABANDON, client, list(job.all()), [])
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def release_results(
    client: RedisClient, job: JobKeys, released: int, keep: int, fields: list[str]
) -> Any:
    """Free the results a streaming map's consumer has read: batches below
    ``released`` and their ``fields``; keep the last ``keep`` events
    (lua/release.lua)."""
    return _run(_RELEASE, client, list(job.all()), [released, keep, *fields])


def prepare_retry_round(
    client: RedisClient, job: JobKeys, items: int, entries: int, batches: str
) -> Any:
    """Prepare a retry round of a finished job, which stays as it was until the
    round opens (``open_round``); see lua/_rounds.lua and lua/retry.lua."""
    return _run(_RETRY, client, list(job.all()), [items, entries, batches])


def prepare_requeue_round(
    client: RedisClient, job: JobKeys, dead_id: str, seen_round: int, items: int, index: int
) -> Any:
    """Prepare the retry round that runs a dead-lettered batch again (once per
    dead letter: its round once open); see lua/requeue.lua for the return codes."""
    return _run(_REQUEUE, client, list(job.all()), [dead_id, seen_round, items, index])


def sign_round(client: RedisClient, job: JobKeys, round_: int, signature: str) -> Any:
    """Store the signature of prepared round ``round_`` (``Keyring.sign_round``)
    in the job's meta (``rsig:<round>``), before its entries are queued: readers
    with a secret trust ``round:<round>`` only with it. A plain write: the field
    is void until the round opens, and a forger cannot make one."""
    return client.hset(job.meta, f"rsig:{round_}", signature)


def open_round(client: RedisClient, job: JobKeys, round_: int) -> Any:
    """Open a prepared retry round, once its entries are queued (idempotent);
    see lua/open_round.lua for the return codes."""
    return _run(_OPEN_ROUND, client, list(job.all()), [round_])


def dead_letter(
    client: RedisClient,
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
    args = [entry_id, GROUP, reason, maxlen, repr(now), *flat]
    return _run(_DEAD_LETTER, client, [queue.stream, queue.dead], args)
