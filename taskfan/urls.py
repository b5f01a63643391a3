"""Redis URLs: what taskfan accepts, checked before any connection is made.

One server, a Redis Cluster, or a master found through Sentinel, each with or
without TLS (the ``rediss`` schemes)::

    redis://[[user]:password@]host[:6379][/db]        rediss://...
    unix:///path/to/redis.sock[?db=0]
    redis+cluster://[[user]:password@]host:port[,host:port...]     rediss+cluster://...
    redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/db]
                                                                   rediss+sentinel://...

For a cluster, any node (or several) is enough: the client finds the others.
For Sentinel, the hosts are sentinels (port 26379 by default) and the user and
password are those of the master; ``sentinel_username`` and
``sentinel_password`` authenticate to the sentinels themselves.

Query options (``?name=value&...``), checked here so that a typo is an error
naming the option instead of a failure at the first command:

- TLS (``rediss`` schemes only): ``ssl_ca_certs`` (CA bundle file),
  ``ssl_ca_path`` (folder of CA certificates), ``ssl_certfile`` and
  ``ssl_keyfile`` (client certificate and key, for servers that require one),
  ``ssl_password`` (of the key), ``ssl_cert_reqs`` (``required``, the default;
  ``optional``; ``none`` turns verification off), ``ssl_check_hostname``
  (``true``/``false``).
- ``socket_connect_timeout`` (seconds), ``client_name`` (shown by CLIENT LIST).
- ``db`` (one server or Sentinel only; a cluster has database 0 alone).
- ``sentinel_username``, ``sentinel_password`` (Sentinel URLs only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from taskfan.errors import ConfigError
from taskfan.keys import not_utf8

SINGLE, CLUSTER, SENTINEL = "single", "cluster", "sentinel"
SCHEMES = {
    "redis": (SINGLE, False),
    "rediss": (SINGLE, True),
    "unix": (SINGLE, False),
    "redis+cluster": (CLUSTER, False),
    "rediss+cluster": (CLUSTER, True),
    "redis+sentinel": (SENTINEL, False),
    "rediss+sentinel": (SENTINEL, True),
}
DEFAULT_PORT = {SINGLE: 6379, CLUSTER: 6379, SENTINEL: 26379}

TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
TLS_OPTIONS = (*TLS_FILES, "ssl_ca_path", "ssl_password", "ssl_cert_reqs", "ssl_check_hostname")
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
COMMON_OPTIONS = ("socket_connect_timeout", "client_name", "db")
#: query options whose values are secrets, hidden by ``redact``
SECRET_OPTIONS = ("ssl_password", "sentinel_password", "password")
CERT_REQS = ("none", "optional", "required")


def redact(url: str) -> str:
    """The URL with its password (and secret query options) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    query = parts.query
    if query and any(f"{name}=" in query for name in SECRET_OPTIONS):
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{k}={'***' if k in SECRET_OPTIONS else v}" for k, v in pairs)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


@dataclass(frozen=True)
class RedisTarget:
    """A parsed Redis URL: which kind of deployment, where, and how to connect."""

    url: str
    kind: str  #: SINGLE, CLUSTER or SENTINEL
    tls: bool
    hosts: tuple[tuple[str, int], ...] = ()  #: cluster nodes or sentinels (not for SINGLE)
    service: str | None = None  #: the Sentinel service (master name)
    db: int = 0
    username: str | None = None
    password: str | None = None
    #: keyword arguments for every connection (TLS files, timeouts, client name)
    options: dict[str, Any] = field(default_factory=dict)
    #: keyword arguments for connections to sentinels (their credentials)
    sentinel_options: dict[str, Any] = field(default_factory=dict)


def _fail(url: str, problem: str) -> ConfigError:
    return ConfigError(f"Redis URL {redact(url)!r}: {problem}")


def _flag(url: str, name: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise _fail(url, f"option {name} must be true or false, got {text!r}")


def _options(url: str, query: str, kind: str, tls: bool) -> dict[str, Any]:
    allowed = (*COMMON_OPTIONS, *TLS_OPTIONS, *(SENTINEL_OPTIONS if kind == SENTINEL else ()))
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in allowed:
            raise _fail(url, f"unknown option {name!r}; taskfan understands {', '.join(allowed)}")
        if name in TLS_OPTIONS and not tls:
            raise _fail(url, f"option {name} needs TLS: use a rediss scheme")
        if name in TLS_FILES and not os.path.isfile(value):
            raise _fail(url, f"option {name}: no such file {value!r}")
        if name == "ssl_ca_path" and not os.path.isdir(value):
            raise _fail(url, f"option {name}: no such folder {value!r}")
        if name == "ssl_cert_reqs" and value not in CERT_REQS:
            raise _fail(url, f"option ssl_cert_reqs must be one of {', '.join(CERT_REQS)}")
        if name == "ssl_check_hostname":
            options[name] = _flag(url, name, value)
        elif name in ("socket_connect_timeout", "db"):
            try:
                options[name] = float(value) if name != "db" else int(value)
            except ValueError:
                raise _fail(url, f"option {name} must be a number, got {value!r}") from None
        else:
            options[name] = value
    return options


def _hosts(url: str, netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts = []
    for part in netloc.split(","):
        host, port = part, str(default_port)
        if part.startswith("["):  # [IPv6]:port
            host, _, rest = part[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else port
        elif ":" in part:
            host, port = part.rsplit(":", 1)
        if not host:
            raise _fail(url, f"host missing in {part!r}")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise _fail(url, f"bad port {port!r} for host {host!r}")
        hosts.append((host, int(port)))
    return tuple(hosts)


def parse(url: str) -> RedisTarget:
    """Check ``url`` and say how to connect; ConfigError names what is wrong."""
    problem = not_utf8(url)
    if problem:
        raise _fail(url, problem)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise _fail(url, f"must start with one of {', '.join(s + '://' for s in SCHEMES)}")
    kind, tls = SCHEMES[scheme]
    parts = urlsplit(url)
    options = _options(url, parts.query, kind, tls)
    if kind == SINGLE:
        if scheme != "unix" and not parts.hostname:
            raise _fail(url, "host missing")
        return RedisTarget(url, kind, tls, options=options)
    userinfo, _, netloc = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    if not netloc:
        raise _fail(url, "no host given")
    hosts = _hosts(url, netloc, DEFAULT_PORT[kind])
    path = [unquote(p) for p in parts.path.split("/") if p]
    db = options.pop("db", 0)
    sentinel_options = {
        name.removeprefix("sentinel_"): options.pop(name)
        for name in SENTINEL_OPTIONS
        if name in options
    }
    service = None
    if kind == CLUSTER:
        if path not in ([], ["0"]) or db:
            raise _fail(url, "a Redis Cluster has database 0 only: leave the path empty")
    else:
        if not path:
            raise _fail(url, "the Sentinel service name is missing: .../SERVICE[/db]")
        if len(path) > 2:
            raise _fail(url, "expected .../SERVICE[/db] after the sentinels")
        service = path[0]
        if len(path) == 2:
            if not path[1].isdigit():
                raise _fail(url, f"database must be a number, got {path[1]!r}")
            db = int(path[1])
    return RedisTarget(
        url, kind, tls, hosts, service, db, username, password, options, sentinel_options
    )
