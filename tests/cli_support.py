"""Shared pieces of the CLI tests: a clean environment, running commands, processes."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from taskfan.cli import main
from taskfan.keys import JobKeys, QueueKeys

REPO = Path(__file__).resolve().parents[1]
#: TASKFAN_* variables that say where the tests' own Redis is; the rest are cleared
KEPT = {"TASKFAN_REDIS_SERVER", "TASKFAN_TEST_REDIS_URL"}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No TASKFAN_* settings from the caller's shell; logging restored after."""
    for name in list(os.environ):
        if name.startswith("TASKFAN_") and name not in KEPT:
            monkeypatch.delenv(name)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def invoke(
    *args: str, input: str | bytes | None = None, env: dict[str, str] | None = None
) -> Result:
    """Run ``taskfan ARGS`` in this process; stdout and stderr kept apart."""
    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)


def taskfan(*args: str) -> list[str]:
    return [sys.executable, "-m", "taskfan", *args]


#: runs argv[1:] with SIGINT at its default disposition (execv keeps the pid)
_SIGINT_DEFAULT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


#: runs argv[1:] with SIGINT ignored, as a script's ``cmd &`` or nohup starts it
_SIGINT_IGNORED = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)
#: put in front of a command: it starts with SIGINT ignored (a background job)
SIGINT_IGNORED = (sys.executable, "-c", _SIGINT_IGNORED)


def sigint_default(command: list[str]) -> list[str]:
    """``command`` for a child a test sends SIGINT (Ctrl-C) to.

    A test suite started in the background (``cmd &`` in a script, nohup) runs
    with SIGINT ignored, and children inherit that (``restore_signals`` covers
    SIGPIPE and SIGXFSZ only, and ``preexec_fn`` is unsafe with threads): the
    child would never see the test's Ctrl-C. A small launcher resets it, then
    execs the command in its own process, so the pid is the command's.
    """
    return [sys.executable, "-c", _SIGINT_DEFAULT, *command]


def run_taskfan(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``taskfan ARGS`` as a subprocess in the repository root."""
    if "input" not in kwargs:
        kwargs.setdefault("stdin", subprocess.DEVNULL)  # never the terminal's
    return subprocess.run(
        taskfan(*args), cwd=REPO, env=env or clean_environ(), capture_output=True,
        text=True, timeout=timeout, **kwargs,
    )  # fmt: skip


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without TASKFAN_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKFAN_") or k in KEPT}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def outcomes(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def process_state(pid: int) -> str:
    """The kernel's state letter of ``pid`` ("Z": a zombie), or "gone"."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def running(pids: set[int]) -> set[int]:
    """The pids that still run (zombies waiting for a reaper do not)."""
    return {pid for pid in pids if process_state(pid) not in ("gone", "Z", "X")}


# ------------------------------------------------------------- taskfan run


def start_run(
    popen: list[subprocess.Popen[str]],
    *args: str,
    env: dict[str, str],
    wrap: tuple[str, ...] | None = None,
) -> subprocess.Popen[str]:
    """``taskfan run`` of tests.tasks:sleep, one process, batches of 2, its stderr
    piped; with SIGINT at its default unless ``wrap`` says how else to start it.
    Added to ``popen`` (the fixture), which kills it at the end of the test."""
    command = taskfan("run", "tests.tasks:sleep", "-p", "1", "--batch-size", "2", *args)
    proc = subprocess.Popen(
        sigint_default(command) if wrap is None else [*wrap, *command],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    popen.append(proc)
    return proc


def read_until(proc: subprocess.Popen[str], pattern: re.Pattern[str]) -> re.Match[str]:
    """Read the process's stderr line by line until ``pattern`` matches."""
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        match = pattern.search(line)
        if match:
            return match
    raise AssertionError("never printed " + pattern.pattern + ":\n" + "".join(seen))


def job_ids(client: redis.Redis) -> list[str]:
    """The ids of the jobs on queue ``default``."""
    ids: Any = client.zrange(QueueKeys("default").jobs, 0, -1)
    return [i.decode() for i in ids]


def some_batches_done(client: redis.Redis) -> bool:
    """Whether the first job on queue ``default`` has a batch done."""
    ids = job_ids(client)
    return bool(ids) and int(client.hget(JobKeys(ids[0]).meta, "batches_done") or 0) > 0
