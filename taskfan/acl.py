"""Least-privilege Redis ACL rules for worker nodes and producers.

Each role gets the taskfan keys (``~taskfan:*``), no pub/sub channel, and only
the commands it sends, counted from the code: those of ``worker/redis_io.py``
and ``worker/stream_reads.py`` for a worker; of ``producer/`` for a producer
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
write keys outside ``taskfan:``, run arbitrary Lua (EVAL), flush, configure or
shut down the server. ``taskfan acl ROLE`` prints the ACL SETUSER command.
A node that also serves RQ queues needs RQ's keys and commands besides.
"""

from __future__ import annotations

import click

#: what every client needs: health checks, choosing a database
CONNECTION = ("ping", "select")
#: what a cluster client needs to find the nodes and the keys of a command
CLUSTER = ("cluster|slots", "cluster|shards", "command")
#: commands the Lua scripts call (record.lua, which may open a retry round, and
#: dead_letter.lua for workers; seal, cancel, retry, requeue, open_round and
#: record, for rejected inputs, for producers)
WORKER_LUA = ("hget", "hmget", "hset", "hsetnx", "hincrby", "expire", "xadd", "xack", "xdel",
              "hexists", "hkeys", "hdel", "persist")  # fmt: skip
PRODUCER_LUA = ("exists", "hget", "hmget", "hset", "hsetnx", "hincrby", "hdel", "expire",
                "persist", "xadd", "hexists", "hkeys")  # fmt: skip

ROLES: dict[str, tuple[str, ...]] = {
    "worker": (
        *CONNECTION,
        *CLUSTER,
        # the reader: blocking reads on a connection of its own, cut short by id
        "client|id", "client|unblock", "xreadgroup", "xautoclaim", "xpending",
        # consumer groups and the queue registry
        "xgroup|create", "xgroup|delconsumer", "sadd",
        # recording and acknowledging, leases, the node record and its queue depths
        "script|load", "evalsha", "xack", "xdel", "xclaim", "hget", "hset", "expire",
        "zadd", "zrem", "del", "xlen",
        # the measured cost per item of each function, for producers' batch sizes
        "set",
        *WORKER_LUA,
    ),
    "producer": (
        *CONNECTION,
        *CLUSTER,
        # enqueue (and undo a failed one); batch sizes from the measured costs
        "hset", "hincrby", "expire", "zadd", "zremrangebyrank", "sadd", "xadd", "xdel",
        "zrem", "del", "script|load", "evalsha", "get", "zrangebyscore",
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
@click.argument("role", type=click.Choice(sorted(ROLES)))
@click.option("--user", help="User name (default: taskfan-ROLE)")
def acl(role: str, user: str | None) -> None:
    """Print the least-privilege ACL SETUSER command for ROLE.

    \b
    Run it with redis-cli as an admin, after putting the password in place of
    PASSWORD (or add the rules to an ACL file). See docs/scaling.md.

    \b
    Example:
      taskfan acl worker --user nodes
    """
    click.echo(setuser(role, user or f"taskfan-{role}"))
