"""What a node checks before it drains RQ queues (besides the RQ version, which
``versions`` checks as the package loads): a Redis that has what RQ needs, the
node's security settings against the queues' serializer; and that serializer,
resolved as RQ does."""

from __future__ import annotations

import pickle

import redis
from rq.serializers import DefaultSerializer, JSONSerializer, Serializer, resolve_serializer

from taskfan.boundary import brief, reraise_interrupt
from taskfan.errors import ConfigError


def check_trust(
    serializer_name: str | None, signed: bool, no_pickle: bool, trusted: bool = False
) -> None:
    """Refuse RQ queues whose jobs a node's security settings say not to run.

    RQ jobs carry no signature, and with RQ's default serializer their data is a
    pickle, which runs code as it loads: a node that runs only signed batches
    (a secret) or refuses pickle (--no-pickle) would let anyone who can write to
    Redis run code through them. Such a node resolves the serializer, as RQ
    does, and judges it by what it is, not by its name: RQ's JSONSerializer
    passes, anything that unpickles is refused, and any other serializer only
    when the operator marks it as not unpickling (``trusted``,
    --rq-serializer-trusted). --allow then limits the functions jobs may call.
    """
    if serializer_name is not None and not serializer_name.strip():
        raise ConfigError(
            "--rq-serializer is empty: name a serializer (json, pickle or module.Name), "
            "or leave it out for RQ's default (pickle)"
        )
    if not (signed or no_pickle):
        return
    resolved = serializer(serializer_name)
    if resolved is JSONSerializer:
        return
    why = "runs only signed batches (a secret)" if signed else "refuses pickle (--no-pickle)"
    if unpickles(resolved):
        raise ConfigError(
            f"this node {why}, but RQ jobs are not signed and the RQ serializer "
            f"{serializer_name or 'pickle'!r} is RQ's pickle serializer, whose data runs code "
            "as it loads: anyone who can write to Redis could run code through it. Drain "
            "queues enqueued with RQ's JSONSerializer (--rq-serializer json, with --allow), "
            "or drain these on a node without a secret or --no-pickle (docs/rq.md#security)"
        )
    if not trusted:
        raise ConfigError(
            f"this node {why}, but RQ jobs are not signed and the RQ serializer "
            f"{serializer_name!r} is not RQ's JSONSerializer: taskfan cannot tell whether it "
            "runs code as it loads. If it never unpickles (nor runs code otherwise), say so "
            "with --rq-serializer-trusted (TASKFAN_RQ_SERIALIZER_TRUSTED=1) (docs/rq.md#security)"
        )


def unpickles(resolved: Serializer) -> bool:
    """Whether a resolved serializer is (or derives from) RQ's pickle serializer,
    or loads with pickle's own functions, whatever its name."""
    if isinstance(resolved, type) and issubclass(resolved, DefaultSerializer):
        return True
    loads = getattr(resolved, "loads", None)
    loads = getattr(loads, "func", loads)  # a functools.partial of pickle.loads
    if loads in (pickle.loads, getattr(pickle, "_loads", None)):
        return True
    return isinstance(loads, type) and issubclass(loads, pickle.Unpickler)


def serializer(name: str | None) -> Serializer:
    try:
        return resolve_serializer(name)
    except BaseException as exc:  # importing a serializer's module runs its code
        reraise_interrupt(exc)
        raise ConfigError(f"RQ serializer {name!r}: {brief(exc)}") from None


def check_server(client: redis.Redis) -> None:
    """RQ 2's intermediate list needs LMOVE: Redis 6.2 or later."""
    version = str(client.info("server").get("redis_version", "0"))
    if tuple(int(p) for p in version.split(".")[:2]) < (6, 2):
        raise ConfigError(f"draining RQ queues needs Redis 6.2 or later (LMOVE); found {version}")
