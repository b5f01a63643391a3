"""A URL that answers, but not as Redis does (an HTTP server on that port): one
line and exit 2 from every command that connects, our own error from the API."""

from __future__ import annotations

import http.server
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer import Executor
from producer.client import Client
from taskfan.cli import COMMANDS
from taskfan.errors import BrokerUnavailable
from tests.cli_support import clean_env, clean_environ, invoke, run_taskfan, write_lines
from tests.tasks import square

pytestmark = pytest.mark.usefixtures("clean_env")
__all__ = ["clean_env"]

JOB = "0123456789abcdef"


class KeepAliveHandler(socketserver.BaseRequestHandler):
    """An HTTP server that answers anything with a 400 and keeps the connection
    open, as keep-alive servers do: the client reads an HTTP status line."""

    def handle(self) -> None:
        while self.request.recv(4096):
            self.request.sendall(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 11\r\nConnection: keep-alive\r\n\r\nBad Request"
            )


class KeepAliveServer(socketserver.ThreadingTCPServer):
    daemon_threads = True


class QuietHTTPHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module", params=["keep-alive", "http.server"])
def http_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """redis:// URL of an HTTP server on a free loopback port."""
    server: socketserver.TCPServer
    if request.param == "keep-alive":
        server = KeepAliveServer(("127.0.0.1", 0), KeepAliveHandler)
    else:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), QuietHTTPHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.server_address[1]}/0"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "in.jsonl", ["1"])


def args_for(command: str, url: str, inputs: Path) -> list[str]:
    with_url = ["--redis-url", url]
    return {
        "enqueue": ["enqueue", "tests.tasks:square", "-i", str(inputs), *with_url],
        "status": ["status", *with_url],
        "worker": ["worker", *with_url],
        "nodes": ["nodes", *with_url],
        "jobs": ["jobs", *with_url],
        "dead": ["dead", "default", *with_url],
        "purge": ["purge", "default", "--yes", *with_url],
        "dashboard": ["dashboard", "--port", "0", *with_url],
    }.get(command, [command, JOB, *with_url])


#: commands that talk to Redis; ``run`` is tested as a process (it sets signal handlers)
CONNECTING = sorted(set(COMMANDS) - {"acl", "run"})


@pytest.mark.parametrize("command", CONNECTING)
def test_every_command_says_one_line(command: str, http_url: str, inputs: Path) -> None:
    result = invoke(*args_for(command, http_url, inputs))
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: connecting to {http_url}: "), lines[0]
    assert "Redis" in lines[0]


def test_run_says_one_line_and_starts_no_worker(http_url: str, inputs: Path) -> None:
    done = run_taskfan(
        "run", "tests.tasks:square", "-i", str(inputs), "-p", "1",
        env=clean_environ(TASKFAN_REDIS_URL=http_url),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"Error: connecting to {http_url}: ")


def test_the_api_raises_our_error(http_url: str) -> None:
    client = Client.from_url(http_url, codec="json")
    with pytest.raises(BrokerUnavailable, match="Redis"):
        client.map("tests.tasks:square", [1, 2])
    with pytest.raises(BrokerUnavailable, match=f"reading job {JOB}: "):
        client.job(JOB).progress()
    # the future fails, and so does the shutdown that seals its job: our error both times
    with pytest.raises(BrokerUnavailable, match="Redis"), Executor(http_url) as executor:
        executor.submit(square, 2).result(timeout=30)


DENIED = (
    b"-DENIED Redis is running in protected mode because protected mode is enabled and "
    b"no password is set for the default user.\r\n"
)


class ProtectedModeHandler(socketserver.BaseRequestHandler):
    """What a Redis in protected mode says to a client from another host, then hangs up."""

    def handle(self) -> None:
        self.request.sendall(DENIED)


@pytest.mark.parametrize("command", ["status", "enqueue", "worker"])
def test_a_redis_in_protected_mode_is_one_line(command: str, inputs: Path) -> None:
    server = KeepAliveServer(("127.0.0.1", 0), ProtectedModeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"redis://127.0.0.1:{server.server_address[1]}/0"
        result = invoke(*args_for(command, url, inputs))
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith(f"Error: connecting to {url}: Redis refused the connection: ")
    assert "DENIED Redis is running in protected mode" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
