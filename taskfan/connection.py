"""Opening Redis connections, and turning Redis errors into ours where they enter."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import redis

from taskfan.errors import BrokerUnavailable, ConfigError

SCHEMES = ("redis", "rediss", "unix")


def redact(url: str) -> str:
    """The URL with any password replaced, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def connect(url: str, *, block_seconds: float = 2.0) -> redis.Redis:
    """A client for ``url``; its socket timeout leaves room for blocking reads."""
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ConfigError(
            f"Redis URL {redact(url)!r} must start with one of "
            f"{', '.join(s + '://' for s in SCHEMES)}"
        )
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=block_seconds + 10.0,
            socket_connect_timeout=5.0,
            health_check_interval=30,
        )
    except ValueError as exc:
        raise ConfigError(f"Redis URL {redact(url)!r}: {exc}") from None


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Raise BrokerUnavailable, naming ``what`` we were doing, for Redis connection errors."""
    try:
        yield
    except redis.AuthenticationError as exc:
        raise BrokerUnavailable(f"{what}: Redis refused the credentials: {exc}") from exc
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise BrokerUnavailable(f"{what}: Redis is unreachable: {exc}") from exc
    except redis.ResponseError as exc:
        if str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            raise BrokerUnavailable(f"{what}: Redis refused the credentials: {exc}") from exc
        raise


def check(client: redis.Redis, url: str) -> None:
    """Ping once; raise BrokerUnavailable naming the URL when that fails."""
    with translate_errors(f"connecting to {redact(url)}"):
        client.ping()
