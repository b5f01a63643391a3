"""Unusable settings and unreachable Redis: one clear line, a non-zero exit, no traceback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from taskfan.cli import COMMANDS
from taskfan.server import RedisServer
from tests.cli_support import clean_env, clean_environ, invoke, run_taskfan, write_lines

pytestmark = pytest.mark.usefixtures("clean_env")
__all__ = ["clean_env"]


@pytest.fixture(scope="module")
def password_server() -> Iterator[RedisServer]:
    # Set after start: RedisServer's readiness check does not authenticate.
    with RedisServer() as server, redis.Redis(port=server.port) as client:
        client.config_set("requirepass", "s3cret")
        yield server


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "in.jsonl", ["1"])


def args_for(command: str, url: str, inputs: Path) -> list[str]:
    if command == "enqueue":
        return ["enqueue", "tests.tasks:square", "-i", str(inputs), "--redis-url", url]
    if command in ("status", "worker"):
        return [command, "--redis-url", url]
    return [command, "0123456789abcdef", "--redis-url", url]


@pytest.mark.parametrize("command", ["enqueue", "wait", "results", "status", "worker"])
def test_unreachable_redis_is_one_line(command: str, inputs: Path) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    result = invoke(*args_for(command, url, inputs))
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: connecting to {url}: Redis is unreachable")


def test_wrong_password_is_refused_without_showing_it(
    password_server: RedisServer, inputs: Path
) -> None:
    for url in (
        f"redis://:wrong@127.0.0.1:{password_server.port}/0",
        f"redis://127.0.0.1:{password_server.port}/0",
    ):
        result = invoke(*args_for("enqueue", url, inputs))
        assert result.exit_code == 2
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert "Redis refused the credentials" in result.stderr
        assert "wrong" not in result.stderr
    good = f"redis://:s3cret@127.0.0.1:{password_server.port}/0"
    assert invoke(*args_for("enqueue", good, inputs)).exit_code == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://localhost:6379", "must start with one of redis://, rediss://, unix://"),
        ("redis://localhost:port/0", "Redis URL 'redis://localhost:port/0'"),
    ],
)
def test_malformed_urls(url: str, message: str, inputs: Path) -> None:
    result = invoke(*args_for("enqueue", url, inputs))
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_no_redis_configured_and_bad_environment(inputs: Path) -> None:
    result = invoke("enqueue", "tests.tasks:square", "-i", str(inputs))
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: no Redis configured: pass --redis-url or set TASKFAN_REDIS_URL\n"
    )
    result = invoke("status", env={"TASKFAN_BATCH_SIZE": "lots", "TASKFAN_REDIS_URL": "redis://x"})
    assert result.exit_code == 2
    assert "TASKFAN_BATCH_SIZE='lots'" in result.stderr


def test_bad_options(redis_url: str, inputs: Path) -> None:
    base = ["enqueue", "tests.tasks:square", "--redis-url", redis_url]
    result = invoke(*base, "-i", str(inputs), "--batch-size", "0")
    assert result.exit_code == 2
    assert "batch_size must be a whole number from 1 to" in result.stderr
    result = invoke(*base, "-i", str(inputs), "--queue", "a:b")
    assert "invalid queue name 'a:b'" in result.stderr
    result = invoke("enqueue", "no_colon", "-i", str(inputs), "--redis-url", redis_url)
    assert result.exit_code == 2
    assert "must look like 'package.module:function'" in result.stderr
    result = invoke(*base, "-i", "missing.jsonl")
    assert result.exit_code == 2
    assert result.stderr == "Error: missing.jsonl: cannot read: No such file or directory\n"


def test_every_command_has_an_example_in_its_help() -> None:
    for name in COMMANDS:
        result = invoke(name, "--help")
        assert result.exit_code == 0, name
        assert "Example" in result.stdout, name
        assert f"taskfan {name}" in result.stdout, name


def test_a_real_process_prints_no_traceback(inputs: Path) -> None:
    url = f"redis://:pw@127.0.0.1:{closed_port()}/0"
    env = clean_environ(TASKFAN_REDIS_URL=url)
    done = run_taskfan("enqueue", "tests.tasks:square", "-i", str(inputs), env=env)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "redis://:***@127.0.0.1" in done.stderr and ":pw@" not in done.stderr
