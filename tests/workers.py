"""Worker nodes as real ``taskfan worker`` subprocesses, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class WorkerProcess:
    """A ``python -m taskfan worker`` started in the repository root.

    ``queue=None`` leaves ``--queue`` out (an RQ-only node, given ``--rq-queue``).
    ``wrap`` goes in front of the command: ``("ip", "netns", "exec", NAME)`` runs
    the node in a network namespace (``ip`` execs it: ``pid`` is the node's).
    """

    def __init__(
        self,
        redis_url: str,
        *args: str,
        queue: str | None = "default",
        processes: int = 2,
        env: dict[str, str] | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by close()
            "w+b", prefix="taskfan-worker-", suffix=".log"
        )
        command = [
            *wrap, sys.executable, "-m", "taskfan", "worker",
            "--redis-url", redis_url, *(("--queue", queue) if queue else ()),
            "--processes", str(processes), *args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL if it will not go)."""
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker did not stop within {timeout}s:\n{self.log()}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
