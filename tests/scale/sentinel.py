"""A master, a replica and a sentinel on free ports, for tests.

The master and the replica are ``taskfan.server.RedisServer``s (the replica
with ``--replicaof``); the sentinel is ``redis-server sentinel.conf
--sentinel``, the same binary, with a config file of its own that it rewrites.
``failover()`` asks the sentinel to promote the replica and waits until it is
the master everyone is told about.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from taskfan.server import HOST, RedisServer, find_redis_server
from tests.helpers import wait_until

SERVICE = "taskfan-test"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class SentinelProcess:
    """One sentinel watching ``SERVICE`` at ``master_port``."""

    def __init__(self, master_port: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="taskfan-sentinel-"))
        self.port = _free_port()
        self.master_port = master_port
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = self.dir / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind {HOST}\ndaemonize no\ndir {self.dir}\n"
            f"logfile {self.dir / 'sentinel.log'}\n"
            f"sentinel monitor {SERVICE} {HOST} {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 2000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
        )
        atexit.register(self.stop)
        self._proc = subprocess.Popen(
            [find_redis_server(), str(config), "--sentinel"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip

        def up() -> bool:
            assert self._proc is not None and self._proc.poll() is None, self.log()
            with contextlib.suppress(redis.ConnectionError), self.client() as client:
                return bool(client.ping())
            return False

        wait_until(up, timeout=10, message=lambda: "the sentinel to start:\n" + self.log())

    def client(self) -> redis.Redis:
        return redis.Redis(HOST, self.port, socket_timeout=5, decode_responses=True)

    def log(self) -> str:
        path = self.dir / "sentinel.log"
        return path.read_text(errors="replace") if path.exists() else "(no log)"

    def stop(self) -> None:
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class LocalSentinel:
    """``with LocalSentinel() as s``: ``s.url`` is a redis+sentinel:// URL."""

    def __init__(self) -> None:
        self.master = RedisServer()
        self.replica: RedisServer | None = None
        self.sentinel: SentinelProcess | None = None

    @property
    def url(self) -> str:
        assert self.sentinel is not None
        return f"redis+sentinel://{HOST}:{self.sentinel.port}/{SERVICE}/0"

    def __enter__(self) -> LocalSentinel:
        try:
            self.master.start()
            self.replica = RedisServer(extra_args=("--replicaof", HOST, str(self.master.port)))
            self.replica.start()
            self.sentinel = SentinelProcess(self.master.port)
            self.sentinel.start()
            wait_until(
                self._replica_known,
                timeout=30,
                interval=0.1,
                message=lambda: "the sentinel to know the replica:\n" + self.log(),
            )
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        for part in (self.sentinel, self.replica, self.master):
            if part is not None:
                part.stop()

    def log(self) -> str:
        return self.sentinel.log() if self.sentinel else "(no sentinel)"

    @contextlib.contextmanager
    def _sentinel(self) -> Iterator[redis.Redis]:
        assert self.sentinel is not None
        with self.sentinel.client() as client:
            yield client

    def _replica_known(self) -> bool:
        with self._sentinel() as client:
            replicas: Any = client.execute_command("SENTINEL REPLICAS", SERVICE)
        return any(r["flags"] == "slave" and r.get("master-link-status") == "ok" for r in replicas)

    def master_port(self) -> int:
        with self._sentinel() as client:
            _, port = client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)

    def failover(self) -> None:
        """Promote the replica (SENTINEL FAILOVER); return once it is the master
        and the old master has been turned into its replica.

        The sentinel demotes the old master only some seconds after the
        promotion (about 8 s): until then both accept writes, and what the old
        one took is lost when it syncs from the new one.
        """
        assert self.replica is not None
        with self._sentinel() as client:
            client.execute_command("SENTINEL FAILOVER", SERVICE)

        def role(port: int) -> bytes:
            with redis.Redis(HOST, port) as server:
                reply: Any = server.execute_command("ROLE")
            return bytes(reply[0])

        def switched() -> bool:
            assert self.replica is not None
            new, old = self.replica.port, self.master.port
            return self.master_port() == new and role(new) == b"master" and role(old) == b"slave"

        wait_until(switched, timeout=60, interval=0.1,
                   message=lambda: "the replica to become the master:\n" + self.log())  # fmt: skip
