"""What a node checks before it drains RQ queues: the RQ version the adapter is
written for, a Redis that has what RQ 2 needs, the node's security settings
against the queues' serializer; and that serializer, resolved as RQ does."""

from __future__ import annotations

import redis
import rq
from rq.serializers import Serializer, resolve_serializer

from taskfan.errors import ConfigError

PINNED = "2.12.0"


def check_version() -> None:
    if rq.__version__ != PINNED:
        raise ConfigError(
            f"taskfan's RQ adapter is written for rq=={PINNED}, but rq {rq.__version__} is "
            f"installed: pip install 'rq=={PINNED}'"
        )


def check_trust(serializer_name: str | None, signed: bool, no_pickle: bool) -> None:
    """Refuse RQ queues whose jobs a node's security settings say not to run.

    RQ jobs carry no signature, and with RQ's default serializer their data is a
    pickle, which runs code as it loads: a node that runs only signed batches
    (a secret) or refuses pickle (--no-pickle) would let anyone who can write to
    Redis run code through them. It may drain RQ queues whose serializer is not
    pickle (e.g. json); --allow then limits the functions their jobs may call.
    """
    if serializer_name not in (None, "pickle", "rq.serializers.DefaultSerializer"):
        return
    if signed or no_pickle:
        why = "runs only signed batches (a secret)" if signed else "refuses pickle (--no-pickle)"
        raise ConfigError(
            f"this node {why}, but RQ jobs are not signed and the RQ queues use RQ's "
            "pickle serializer, whose data runs code as it loads: anyone who can write to "
            "Redis could run code through them. Drain queues enqueued with RQ's "
            "JSONSerializer (--rq-serializer json, with --allow), or drain these on a node "
            "without a secret or --no-pickle (docs/rq.md#security)"
        )


def serializer(name: str | None) -> Serializer:
    try:
        return resolve_serializer(name)
    except Exception as exc:
        raise ConfigError(f"RQ serializer {name!r}: {exc}") from None


def check_server(client: redis.Redis) -> None:
    """RQ 2's intermediate list needs LMOVE: Redis 6.2 or later."""
    version = str(client.info("server").get("redis_version", "0"))
    if tuple(int(p) for p in version.split(".")[:2]) < (6, 2):
        raise ConfigError(f"draining RQ queues needs Redis 6.2 or later (LMOVE); found {version}")
