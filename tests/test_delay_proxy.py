"""The latency benchmark's delaying proxy: the delay is applied, pipelining and order
are kept, and a close on either side closes the other."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import pytest
import redis

from benchmarks.delay_proxy import DelayProxy

RTT = 0.05
DEADLINE = 10.0


@pytest.fixture
def proxy(redis_url: str) -> Iterator[DelayProxy]:
    target = urlparse(redis_url)
    assert target.hostname and target.port
    with DelayProxy(target.hostname, target.port, rtt=RTT) as started:
        yield started


def connect(proxy: DelayProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=DEADLINE)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def test_a_ping_takes_at_least_one_round_trip(proxy: DelayProxy) -> None:
    with connect(proxy) as sock:
        for _ in range(3):
            started = time.perf_counter()
            sock.sendall(b"PING\r\n")
            assert read_exactly(sock, 7) == b"+PONG\r\n"
            elapsed = time.perf_counter() - started
            assert elapsed >= RTT, f"a PING took {elapsed * 1000:.1f} ms through a {RTT}s proxy"


def test_the_delay_changes_between_requests(proxy: DelayProxy) -> None:
    client = redis.Redis.from_url(proxy.url)
    client.ping()
    proxy.rtt = 0.0
    started = time.perf_counter()
    for _ in range(20):
        client.ping()
    assert time.perf_counter() - started < 20 * RTT / 2, "rtt 0 still delays every request"
    with pytest.raises(ValueError, match="rtt"):
        proxy.rtt = -1
    client.close()


def test_pipelined_commands_keep_their_order_and_share_one_round_trip(
    proxy: DelayProxy,
) -> None:
    client = redis.Redis.from_url(proxy.url)
    count = 200
    started = time.perf_counter()
    with client.pipeline(transaction=False) as pipe:
        for i in range(count):
            pipe.echo(f"m{i}")
        replies = pipe.execute()
    elapsed = time.perf_counter() - started
    assert replies == [f"m{i}".encode() for i in range(count)]
    # one round trip (plus a connect's), never one per command
    assert RTT <= elapsed < 5 * RTT, f"{count} pipelined commands took {elapsed:.3f}s"
    client.close()


def test_commands_sent_one_by_one_without_waiting_overlap(proxy: DelayProxy) -> None:
    """Chunks written apart in time each keep their own release time: the proxy
    does not hold a second request until the first one's reply came back."""
    with connect(proxy) as sock:
        started = time.perf_counter()
        for i in range(10):
            sock.sendall(f"ECHO x{i}\r\n".encode())
            time.sleep(RTT / 10)  # the sender's pacing, not a synchronisation
        expected = b"".join(f"${len(f'x{i}')}\r\nx{i}\r\n".encode() for i in range(10))
        assert read_exactly(sock, len(expected)) == expected
        elapsed = time.perf_counter() - started
    # sent over about one RTT, answered one RTT later: well under 10 round trips
    assert elapsed < 4 * RTT, f"10 overlapping requests took {elapsed:.3f}s"


def _clients_named(r: redis.Redis, name: str) -> int:
    listed: list[dict[str, str]] = r.client_list()
    return sum(1 for entry in listed if entry.get("name") == name)


def _wait_for(condition_met: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition_met():
        assert time.monotonic() < deadline, f"not within {DEADLINE}s: {what}"
        time.sleep(0.01)


def test_a_client_closing_closes_the_proxys_connection_to_redis(
    proxy: DelayProxy, r: redis.Redis
) -> None:
    sock = connect(proxy)
    sock.sendall(b"CLIENT SETNAME delay-proxy-test\r\n")
    assert read_exactly(sock, 5) == b"+OK\r\n"
    assert _clients_named(r, "delay-proxy-test") == 1
    sock.close()
    _wait_for(lambda: _clients_named(r, "delay-proxy-test") == 0, "Redis saw the close")


def test_redis_closing_closes_the_clients_connection(proxy: DelayProxy, r: redis.Redis) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"CLIENT SETNAME delay-proxy-killed\r\n")
        assert read_exactly(sock, 5) == b"+OK\r\n"
        listed: list[dict[str, str]] = r.client_list()
        (ident,) = [e["id"] for e in listed if e.get("name") == "delay-proxy-killed"]
        assert r.execute_command("CLIENT", "KILL", "ID", ident) == 1
        started = time.perf_counter()
        assert sock.recv(100) == b"", "the client's connection stayed open"
        assert time.perf_counter() - started < DEADLINE


def test_a_target_that_is_down_closes_the_client(redis_url: str) -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]  # nothing listens on it
    with DelayProxy("127.0.0.1", port) as proxy, connect(proxy) as sock:
        assert sock.recv(100) == b""
