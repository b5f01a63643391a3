"""The suite's side of a peer: its driver subprocess, asked to time runs.

The driver starts a session of its own (and so a process group): ``stop()``
asks it to close its cluster, kills its group if it does not exit in time, and
then every process left in its session (Ray puts each worker in a group of its
own, but not in a session of its own), so a failed run leaves no strays.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.processes import REPO

READY_TIMEOUT = 180.0
RUN_TIMEOUT = 900.0


def session_members(sid: int) -> list[int]:
    """The live (not zombie) processes in session ``sid`` (Linux /proc; none elsewhere)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended meanwhile
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


class PeerError(RuntimeError):
    """A peer's driver failed, exited or did not answer in time."""


class PeerCluster:
    def __init__(self, name: str, redis_url: str) -> None:
        self.name = name
        self.variants: dict[str, str] = {}
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self._buffer = b""
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.peers.driver", name, redis_url],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path},
        )

    def wait_ready(self) -> None:
        answer = self._read(READY_TIMEOUT)
        self.variants = dict(answer["variants"])

    def time(self, variant: str, count: int, num_calc: int, chunksize: int) -> tuple[float, str]:
        """Seconds of one run, and the digest of its results."""
        command = {"variant": variant, "count": count, "num_calc": num_calc, "chunksize": chunksize}
        self._send(command)
        answer = self._read(RUN_TIMEOUT)
        return float(answer["seconds"]), str(answer["digest"])

    def stop(self, timeout: float = 60.0) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self._send({"quit": True})
                    self.proc.wait(timeout)
                except (PeerError, subprocess.TimeoutExpired):
                    self._kill_group(signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(10)
            self._kill_group(signal.SIGKILL)  # whatever its cluster left in the group
            self.proc.wait()
            self._kill_session()  # ... or in its session
        finally:
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    stream.close()
            self._log.close()

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def _kill_session(self, timeout: float = 10.0) -> None:
        """SIGKILL every live process of the driver's session until none is left."""
        deadline = time.monotonic() + timeout
        while members := session_members(self.proc.pid):
            if time.monotonic() > deadline:
                raise PeerError(f"{self.name}: processes {members} outlived SIGKILL")
            for pid in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def _kill_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as exc:
            raise PeerError(f"{self.name}: the driver is gone ({exc}):\n{self.log()}") from exc

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerError(f"{self.name}: no answer in {timeout:.0f}s:\n{self.log()}")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    raise PeerError(f"{self.name}: the driver exited:\n{self.log()}")
                self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise PeerError(f"{self.name}: {answer['error']}\n{self.log()}")
        return answer
