"""The processes under test: a ``taskfan worker`` node, and its memory.

Each runs as a subprocess in the repository root (where ``benchmarks.tasks`` is
importable), logs to a temporary file, and counts as ready only after it ran a
warm-up job: pool processes started and the task module imported.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.tasks import task
from producer import Client

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 60.0
#: the warm-up job: enough items of a few milliseconds each to start every pool process
WARM_UP = [(0.5, 20_000)] * 8


class PythonProcess:
    """A Python subprocess in the repository root, its output in a temporary file."""

    def __init__(self, args: Sequence[str], what: str) -> None:
        self.what = what
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.what} exited with {self.proc.returncode}:\n{self.log()}")

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def signal(self, signum: int) -> None:
        """Send ``signum`` if the process still runs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> bool:
        """Whether the process exited within ``timeout`` seconds."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class NodeProcess(PythonProcess):
    """``taskfan worker --processes N`` on one queue."""

    def __init__(self, redis_url: str, queue: str, processes: int = 2) -> None:
        args = [
            "-m", "taskfan", "worker", "--redis-url", redis_url, "--queue", queue,
            "--processes", str(processes), "--log-level", "WARNING",
        ]  # fmt: skip
        super().__init__(args, f"taskfan worker on queue {queue}")
        self.queue = queue

    def wait_ready(self, client: Client) -> None:
        """Block until the node ran a warm-up job (``client`` is on its queue)."""
        job = client.map(task, WARM_UP, batch_size=len(WARM_UP), chunksize=1)
        deadline = time.monotonic() + READY_TIMEOUT
        while not job.wait(timeout=0.5):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.what}: no warm-up result in {READY_TIMEOUT}s")
        list(job.results())


# ------------------------------------------------------------------- memory


@dataclass(frozen=True)
class Memory:
    """Peak and current resident memory of a process and all its descendants, in MiB."""

    processes: int
    main_peak: float  #: VmHWM of the process itself
    tree_peak: float  #: sum of VmHWM over the process and its descendants
    tree_rss: float  #: sum of VmRSS over the same

    def to_json(self) -> dict[str, Any]:
        return {
            "processes": self.processes,
            "main_peak_mib": self.main_peak,
            "tree_peak_mib": self.tree_peak,
            "tree_rss_mib": self.tree_rss,
        }


def memory_of_tree(pid: int) -> Memory:
    """Read /proc: VmHWM and VmRSS of ``pid`` and every descendant (Linux only)."""
    pids = [pid, *_descendants(pid)]
    peaks = [_status_kib(p, "VmHWM") for p in pids]
    current = [_status_kib(p, "VmRSS") for p in pids]
    return Memory(len(pids), peaks[0] / 1024, sum(peaks) / 1024, sum(current) / 1024)


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task_dir in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task_dir / "children").read_text().split()
        except OSError:
            continue  # the thread ended meanwhile
        for child in map(int, children):
            found += [child, *_descendants(child)]
    return found


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass  # the process ended meanwhile
    return 0
