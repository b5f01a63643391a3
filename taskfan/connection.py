"""Opening Redis connections, and turning Redis errors into ours where they enter.

``connect`` is the one place a URL becomes a client (see ``taskfan.urls`` for
the URLs): a ``redis.Redis`` for one server or a Sentinel-managed master, a
``redis.cluster.RedisCluster`` for a cluster. Code that takes either is typed
``RedisClient``; a pipeline of either, ``RedisPipeline``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, TypeAlias

import redis
from redis.client import Pipeline
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import ClusterError, InvalidResponse, RedisClusterException
from redis.sentinel import Sentinel

from taskfan.errors import BrokerUnavailable, ConfigError
from taskfan.urls import CLUSTER, SENTINEL, RedisTarget, parse, redact

__all__ = [
    "RedisClient",
    "RedisPipeline",
    "check",
    "connect",
    "is_cluster",
    "redact",
    "translate_errors",
]

#: what we say of a server that answers, but not in Redis's protocol
NOT_REDIS = "the server does not answer as Redis does (is that address a Redis server's?)"

#: what ``connect`` returns: one server (or Sentinel's master), or a cluster
RedisClient: TypeAlias = redis.Redis | RedisCluster
#: a non-transactional pipeline of either (a subclass of its client, so code that
#: takes a ``RedisClient`` takes a pipeline too, as the scripts' entry points do)
RedisPipeline: TypeAlias = Pipeline | ClusterPipeline


def is_cluster(client: object) -> bool:
    """True for a cluster client or a cluster pipeline (a RedisCluster subclass)."""
    return isinstance(client, RedisCluster)


def connect(url: str, *, block_seconds: float = 2.0) -> RedisClient:
    """A client for ``url``; its socket timeout leaves room for blocking reads."""
    target = parse(url)
    timeouts: dict[str, Any] = {
        "socket_timeout": block_seconds + 10.0,
        "socket_connect_timeout": 5.0,
        "health_check_interval": 30,
    }
    timeouts.update(target.options)
    try:
        if target.kind == CLUSTER:
            return _cluster(target, timeouts)
        if target.kind == SENTINEL:
            return _sentinel_master(target, timeouts)
        return redis.Redis.from_url(url, **timeouts)
    except ValueError as exc:
        raise ConfigError(f"Redis URL {redact(url)!r}: {exc}") from None
    except (redis.RedisError, RedisClusterException) as exc:
        # A cluster client asks a node for the slot map as it is created.
        raise BrokerUnavailable(f"connecting to {redact(url)}: {exc}") from exc


def _credentials(target: RedisTarget) -> dict[str, Any]:
    return {"username": target.username, "password": target.password}


def _cluster(target: RedisTarget, options: dict[str, Any]) -> RedisCluster:
    nodes = [ClusterNode(host, port) for host, port in target.hosts]
    return RedisCluster(startup_nodes=nodes, ssl=target.tls, **_credentials(target), **options)


def _sentinel_master(target: RedisTarget, options: dict[str, Any]) -> redis.Redis:
    """The master of the Sentinel service: connections ask the sentinels where it
    is whenever they (re)connect, so they follow a failover."""
    tls = {k: v for k, v in options.items() if k.startswith("ssl_")}
    sentinel_kwargs = {
        "socket_timeout": 5.0,
        "socket_connect_timeout": options["socket_connect_timeout"],
        "ssl": target.tls,
        **tls,
        **target.sentinel_options,
    }
    sentinel = Sentinel(
        list(target.hosts),
        sentinel_kwargs=sentinel_kwargs,
        ssl=target.tls,
        db=target.db,
        **_credentials(target),
        **options,
    )
    assert target.service is not None
    return sentinel.master_for(target.service)


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Raise BrokerUnavailable, naming ``what`` we were doing, for Redis connection errors."""
    try:
        yield
    except redis.AuthenticationError as exc:
        raise BrokerUnavailable(f"{what}: Redis refused the credentials: {exc}") from exc
    except InvalidResponse as exc:  # e.g. "HTTP/1.1 400 Bad Request" from a web server
        raise BrokerUnavailable(f"{what}: {NOT_REDIS}: {exc}") from exc
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise BrokerUnavailable(f"{what}: Redis is unreachable: {exc}") from exc
    except (ClusterError, RedisClusterException) as exc:
        raise BrokerUnavailable(f"{what}: the Redis Cluster is unavailable: {exc}") from exc
    except redis.ResponseError as exc:
        if str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            raise BrokerUnavailable(f"{what}: Redis refused the credentials: {exc}") from exc
        if str(exc).startswith("DENIED"):  # protected mode: no password, another host
            raise BrokerUnavailable(f"{what}: Redis refused the connection: {exc}") from exc
        raise


def check(client: RedisClient, url: str) -> None:
    """Ping once; raise BrokerUnavailable naming the URL when that fails."""
    what = f"connecting to {redact(url)}"
    with translate_errors(what):
        try:
            client.ping()
        except redis.ConnectionError as exc:
            # Redis answers a first PING (with an error, at worst): a server that
            # hangs up without a word speaks another protocol (HTTP, or TLS).
            if "closed by server" in str(exc):
                raise BrokerUnavailable(
                    f"{what}: the server closed the connection without answering a PING "
                    "(is that address a Redis server's? one that wants TLS needs rediss://)"
                ) from exc
            raise
