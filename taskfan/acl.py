"""Least-privilege Redis ACL rules for worker nodes and producers.

Each role gets the taskfan keys (``~taskfan:*``), no pub/sub channel, and only
the commands it sends, counted from the code: those of ``worker/sources/streams/redis_io.py``
(and the modules its ``NodeRedis`` gathers: ``redis_groups``, ``batch_reads``,
``job_states``, ``batch_writes``, ``leases``, ``node_record``) and
``worker/sources/streams/stream_reads.py`` for a worker; of ``producer/`` for a producer
(enqueue, wait, results, cancel, retry, and the operators' commands: status,
nodes, jobs, inspect, dead letters, dashboard, purge); plus the commands the
Lua scripts each role runs call (Redis checks those against the caller too),
and what redis-py sends on its own (PING health checks, SELECT, and on a
cluster CLUSTER SLOTS/SHARDS and COMMAND to learn the slot map and key
positions).

redis-py also names itself on connect (CLIENT SETINFO, Redis 7.2 and later) and
ignores a refusal. The rules leave it out, since Redis 7.0 refuses to grant a
subcommand it does not know; on 7.2 and later add ``+client|setinfo`` to keep
ACL LOG free of those refusals.

A producer cannot take or acknowledge work (XREADGROUP, XCLAIM, XAUTOCLAIM,
XACK, XGROUP), cannot unblock or kill clients, and neither role can read or
write keys outside ``taskfan:``, run Lua of its own, flush, configure or shut
down the server. ``taskfan acl ROLE`` prints the ACL SETUSER command.
A node that also serves RQ queues needs RQ's keys and commands besides.

**Lua.** Neither role may load a script (SCRIPT LOAD) or send one (EVAL): with
either, a user runs any Lua, and a loop in Lua makes Redis answer BUSY to every
client. Roles call taskfan's scripts by SHA (EVALSHA), which runs only a script
already in the server's cache, and an admin puts them there:
``taskfan acl --load-scripts --redis-url ADMIN_URL``, once per server (every
primary of a cluster) and again after a restart or SCRIPT FLUSH, since the
script cache is not persisted. Until then roles fail with that instruction
(``taskfan.scripts.LOAD_HINT``). ``script|exists`` lets them check. Redis 7
Functions (FUNCTION LOAD by an admin, FCALL by the roles) would persist and
replicate; taskfan does not use them yet, so that servers before 7 and
fakeredis keep working.

**Why each wider command stays.**

- ``select``: redis-py sends SELECT when the URL names a database other than 0.
  ACL key patterns hold in every database, so it reaches no other keys.
- ``client|unblock`` (workers): a stopping node cuts its own blocking read
  short by client id. Redis cannot limit it to one's own connections; another
  worker's read that is unblocked only returns early and reads again.
- ``set`` (workers): the measured cost per function is a string key with an
  expiry (SET ... EX); it reaches only ``taskfan:`` keys, as HSET does.
- ``del``: workers delete their node record when they stop, producers the keys
  of an enqueue that failed and of a purged queue; only ``taskfan:`` keys,
  which HDEL and XDEL (needed anyway) could empty as well.
- ``xgroup|delconsumer`` (workers): a stopping node removes its consumer from
  the group, or consumers would pile up in XINFO for ever. No narrower
  command exists; it cannot drop another consumer's pending entries for good
  (they are reclaimed like a crashed node's).
"""

from __future__ import annotations

import os

import click

from taskfan import scripts
from taskfan.connection import connect, translate_errors

#: what every client needs: health checks, choosing a database
CONNECTION = ("ping", "select")
#: what a cluster client needs to find the nodes and the keys of a command
CLUSTER = ("cluster|slots", "cluster|shards", "command")
#: commands the Lua scripts call (record.lua, which may open a retry round, and
#: dead_letter.lua for workers; seal, cancel, retry, requeue, open_round and
#: record, for rejected inputs, release, and cancel_call (a future's cancel:
#: xinfo|groups, xrange, xpending, xdel) for producers; started.lua for workers)
#: (abandon.lua and lease.lua read the server's clock: TIME)
WORKER_LUA = ("hget", "hmget", "hset", "hsetnx", "hincrby", "expire", "xadd", "xack", "xdel",
              "hexists", "hkeys", "hdel", "persist", "time")  # fmt: skip
PRODUCER_LUA = ("exists", "hget", "hmget", "hset", "hsetnx", "hincrby", "hdel", "expire",
                "persist", "xadd", "hexists", "hkeys", "time", "xtrim", "xinfo|groups",
                "xrange", "xdel", "xpending")  # fmt: skip

ROLES: dict[str, tuple[str, ...]] = {
    "worker": (
        *CONNECTION,
        *CLUSTER,
        # the reader: blocking reads on a connection of its own, cut short by id
        "client|id", "client|unblock", "xreadgroup", "xautoclaim", "xpending",
        # consumer groups and the queue registry
        "xgroup|create", "xgroup|delconsumer", "sadd",
        # recording and acknowledging, leases, the node record and its queue depths
        "script|exists", "evalsha", "xack", "xdel", "xclaim", "hget", "hset", "expire",
        "zadd", "zrem", "del", "xlen",
        # the other live nodes' records: can any of them run a function this one cannot?
        "zrange",
        # the measured cost per item of each function, for producers' batch sizes
        "set",
        *WORKER_LUA,
    ),
    "producer": (
        *CONNECTION,
        *CLUSTER,
        # enqueue (and undo a failed one); batch sizes from the measured costs
        "hset", "hincrby", "expire", "zadd", "zremrangebyrank", "sadd", "xadd", "xdel",
        "zrem", "del", "script|exists", "evalsha", "get", "zrangebyscore",
        # wait, results, status, nodes, jobs, inspect, dead letters, dashboard, purge
        "hget", "hgetall", "hmget", "exists", "xread", "xrange", "xrevrange", "xlen",
        "xpending", "zcard", "zrange", "zrevrange", "smembers", "time",
        # a requeued dead letter moves back to its queue in one transaction
        "multi", "exec", "discard",
        *PRODUCER_LUA,
    ),
}  # fmt: skip

KEYS = "~taskfan:*"


def rules(role: str) -> list[str]:
    """The ACL rules of ``role`` ("worker" or "producer"), for ACL SETUSER."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    commands = sorted(set(ROLES[role]))
    return ["resetkeys", KEYS, "resetchannels", "-@all", *(f"+{c}" for c in commands)]


def setuser(role: str, user: str, password: str = "PASSWORD") -> str:
    """The ``ACL SETUSER`` command that creates (or resets) ``user`` for ``role``."""
    return " ".join(["ACL SETUSER", user, "reset", "on", f">{password}", *rules(role)])


@click.command()
@click.argument("role", type=click.Choice(sorted(ROLES)), required=False)
@click.option("--user", help="User name (default: taskfan-ROLE)")
@click.option(
    "--load-scripts",
    is_flag=True,
    help="Load taskfan's Lua scripts into the Redis of --redis-url (an admin's: the "
    "roles may not), on every primary of a cluster; again after a restart",
)
@click.option("--redis-url", help="With --load-scripts: an admin's URL [env: TASKFAN_REDIS_URL]")
def acl(role: str | None, user: str | None, load_scripts: bool, redis_url: str | None) -> None:
    """Print the least-privilege ACL SETUSER command for ROLE, or load the scripts.

    \b
    Run the command with redis-cli as an admin, after putting the password in
    place of PASSWORD (or add the rules to an ACL file); then load the scripts
    the roles call, as the admin. See docs/scaling.md.

    \b
    Example:
      taskfan acl worker --user nodes
      taskfan acl --load-scripts --redis-url redis://default:ADMINPW@redis:6379/0
    """
    if load_scripts:
        _load_scripts(redis_url or os.environ.get("TASKFAN_REDIS_URL"))
    elif role is None:
        raise click.UsageError("give a ROLE (worker or producer), or --load-scripts")
    if role is not None:
        click.echo(setuser(role, user or f"taskfan-{role}"))


def _load_scripts(url: str | None) -> None:
    if not url:
        raise click.UsageError("--load-scripts needs --redis-url (or TASKFAN_REDIS_URL)")
    client = connect(url)
    with translate_errors("loading taskfan's scripts"):
        scripts.load_all(client)
    click.echo("taskfan's scripts are loaded", err=True)
