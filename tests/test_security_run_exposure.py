"""Threat: ``taskfan run`` opening a door to other users of the machine
(docs/security.md).

Its embedded server listens on no TCP port, only on a unix socket in a folder
only its user can enter; its local worker refuses pickle; and the password of
a configured Redis URL never shows on the command line of a process it starts
(worker, lifeline wrapper, embedded server): every user can read those in /proc.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import redis

from taskfan import keys
from taskfan.server import RedisServer
from tests.cli_support import (
    clean_environ,
    descendants,
    read_until,
    some_batches_done,
    start_run,
)
from tests.helpers import wait_until
from tests.workers import WorkerProcess

EMBEDDED = re.compile(r"using an embedded redis-server \S+ on the unix socket (\S+) ")
PASSWORD = "run-exposure-pw-5b1f0c"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def listening_tcp(pid: int) -> list[str]:
    """TCP sockets in LISTEN state that process ``pid`` holds (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append(f"{table} {fields[1]}")
    return found


def test_the_embedded_server_listens_on_no_port_and_the_worker_refuses_pickle(
    popen: list[subprocess.Popen[str]], slow_input: Path
) -> None:
    proc = start_run(popen, "-i", str(slow_input), env=clean_environ())
    socket = read_until(proc, EMBEDDED).group(1)
    with redis.Redis(unix_socket_path=socket) as client:
        wait_until(lambda: some_batches_done(client), timeout=30, message="a batch done")
        assert client.config_get("port") == {"port": "0"}
        assert client.config_get("unixsocketperm") == {"unixsocketperm": "700"}
        server_pid = int(client.info("server")["process_id"])
        folder = Path(socket).parent
        mode = os.stat(folder)
        assert stat.S_IMODE(mode.st_mode) == 0o700 and mode.st_uid == os.getuid()
        assert listening_tcp(server_pid) == []
        node = f"run-{proc.pid}"
        assert client.hget(keys.node(node), "pickle") == b"refused"
    workers = [pid for pid in descendants(proc.pid) if " worker " in cmdline(pid)]
    assert workers and all("--no-pickle" in cmdline(pid) for pid in workers)


def test_no_child_shows_the_password_of_a_configured_redis(
    popen: list[subprocess.Popen[str]], slow_input: Path
) -> None:
    with RedisServer(password=PASSWORD) as server:
        assert PASSWORD in server.url and PASSWORD not in cmdline(server.pid or 0)
        env = clean_environ(TASKFAN_REDIS_URL=server.url)
        proc = start_run(popen, "-i", str(slow_input), env=env)
        with redis.Redis.from_url(server.url) as client:
            wait_until(lambda: some_batches_done(client), timeout=30, message="a batch done")
        children = descendants(proc.pid)
        assert len(children) >= 3  # the lifeline wrapper execs into the worker, its pool
        shown = {pid: cmdline(pid) for pid in children}
        assert any(" worker " in line for line in shown.values()), shown
        assert not [line for line in shown.values() if PASSWORD in line], shown
        assert PASSWORD not in cmdline(proc.pid)


def test_a_password_given_on_the_command_line_is_named_as_exposed() -> None:
    with RedisServer(password=PASSWORD) as server:
        node = WorkerProcess(server.url, "--burst", processes=1)  # --redis-url URL
        try:
            assert node.wait(timeout=60) == 0, node.log()
            assert "WARNING" in node.log() and "set TASKFAN_REDIS_URL" in node.log()
            assert PASSWORD not in node.log()
        finally:
            node.close()
        # Without a password in it, nothing to say (this one is refused: no credentials).
        quiet = WorkerProcess(f"redis://127.0.0.1:{server.port}/0", "--burst", processes=1)
        try:
            assert quiet.wait(timeout=60) == 2
            assert "set TASKFAN_REDIS_URL" not in quiet.log()
        finally:
            quiet.close()
