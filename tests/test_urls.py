"""Redis URLs: one server, a cluster, Sentinel, TLS options; errors that name the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from taskfan.connection import check, connect
from taskfan.errors import BrokerUnavailable, ConfigError
from taskfan.urls import CLUSTER, SENTINEL, SINGLE, parse, redact


def test_one_server() -> None:
    target = parse("redis://:secret@example.org:6380/2")
    assert (target.kind, target.tls) == (SINGLE, False)
    assert parse("rediss://example.org").tls
    assert parse("unix:///run/redis.sock?db=1").kind == SINGLE


def test_a_cluster_from_one_or_several_nodes() -> None:
    target = parse("redis+cluster://app:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7002")
    assert (target.kind, target.tls, target.db) == (CLUSTER, False, 0)
    assert target.hosts == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert (target.username, target.password) == ("app", "p@ss")
    assert parse("rediss+cluster://h:7000/0").tls


def test_sentinel_service_and_database() -> None:
    target = parse(
        "redis+sentinel://:pw@s1:26380,s2/mymaster/3?sentinel_password=spw&socket_connect_timeout=2"
    )
    assert (target.kind, target.service, target.db) == (SENTINEL, "mymaster", 3)
    assert target.hosts == (("s1", 26380), ("s2", 26379))
    assert (target.username, target.password) == (None, "pw")
    assert target.sentinel_options == {"password": "spw"}
    assert target.options == {"socket_connect_timeout": 2.0}
    assert parse("redis+sentinel://s1/mymaster").db == 0


def test_tls_options(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    url = f"rediss://h:6380/0?ssl_ca_certs={ca}&ssl_cert_reqs=required&ssl_check_hostname=false"
    assert parse(url).options == {
        "ssl_ca_certs": str(ca), "ssl_cert_reqs": "required", "ssl_check_hostname": False,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://h:6379", "must start with one of redis://, rediss://, unix://, redis+cluster://"),
        ("redis://h?socket_timeout=3", "unknown option 'socket_timeout'"),
        ("redis://h?ssl_ca_certs=/etc/hosts", "option ssl_ca_certs needs TLS: use a rediss scheme"),
        ("rediss://h?ssl_certfile=/no/such.pem", "ssl_certfile: no such file '/no/such.pem'"),
        ("rediss://h?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of none, optional, required"),
        ("rediss://h?ssl_check_hostname=perhaps", "must be true or false"),
        ("redis://h?socket_connect_timeout=soon", "socket_connect_timeout must be a number"),
        ("redis+cluster://h:7000/1", "a Redis Cluster has database 0 only"),
        ("redis+cluster://h:port", "bad port 'port' for host 'h'"),
        ("redis+cluster://", "no host given"),
        ("redis+sentinel://s1:26379", "the Sentinel service name is missing"),
        ("redis+sentinel://s1/svc/zero", "database must be a number, got 'zero'"),
        ("redis+cluster://h?sentinel_password=x", "unknown option 'sentinel_password'"),
    ],
)
def test_bad_urls_name_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(url)
    assert problem in str(info.value)
    assert str(info.value).startswith("Redis URL ")


def test_passwords_never_show() -> None:
    assert redact("redis://user:secret@h:6379/0") == "redis://user:***@h:6379/0"
    assert redact("redis+sentinel://:pw@s1,s2/svc?sentinel_password=spw&db=1") == (
        "redis+sentinel://:***@s1,s2/svc?sentinel_password=***&db=1"
    )
    assert redact("redis://h:6379/0") == "redis://h:6379/0"
    with pytest.raises(ConfigError) as info:
        parse("redis+cluster://:hunter2@h:7000/5")
    assert "hunter2" not in str(info.value)


def test_unreachable_deployments_are_named(redis_url: str) -> None:
    """A cluster client asks for the slot map at once; Sentinel at the first command."""
    port = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs["port"]
    with pytest.raises(BrokerUnavailable, match=r"connecting to redis\+cluster://127.0.0.1:"):
        connect(f"redis+cluster://127.0.0.1:{port}")  # a server, not in cluster mode
    url = "redis+sentinel://:pw@127.0.0.1:1/svc"
    with pytest.raises(BrokerUnavailable, match=r"redis\+sentinel://:\*\*\*@127.0.0.1:1/svc"):
        check(connect(url), url)


def test_tls_reaches_sentinels_and_the_master(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    client: Any = connect(
        f"rediss+sentinel://u:pw@s1:26379/svc/2?ssl_ca_certs={ca}&sentinel_password=spw"
    )
    pool = client.connection_pool
    assert pool.connection_class.__name__ == "SentinelManagedSSLConnection"
    assert pool.connection_kwargs["ssl_ca_certs"] == str(ca)
    assert (pool.connection_kwargs["username"], pool.connection_kwargs["db"]) == ("u", 2)
    sentinel_kwargs = pool.sentinel_manager.sentinel_kwargs
    assert sentinel_kwargs["ssl"] is True and sentinel_kwargs["ssl_ca_certs"] == str(ca)
    assert sentinel_kwargs["password"] == "spw"
