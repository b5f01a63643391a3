"""What a user installs: a wheel built from a checkout (taskfan is on no package
index), installed into a fresh virtualenv, runs a worker and a job from there."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_support import REPO, clean_environ

#: what the wheel is built from: what a checkout has, nothing the tests made
SOURCES = ("pyproject.toml", "README.md", "taskfan", "producer", "worker")


def test_the_docs_install_from_a_checkout_or_a_wheel_not_an_index() -> None:
    """``pip install taskfan`` finds nothing: no package index serves it."""
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"pip install ['\"]?taskfan\b", text), path


def run(command: list[str], cwd: Path, timeout: float = 60) -> str:
    env = clean_environ()
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_a_wheel_in_a_fresh_venv_runs_a_worker_and_a_job(tmp_path: Path, redis_url: str) -> None:
    source = tmp_path / "checkout"
    source.mkdir()
    skip = shutil.ignore_patterns("__pycache__")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=skip)
        else:
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(dist)], source)
    (wheel,) = dist.glob("taskfan-*.whl")

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    bin_dir = venv / "bin"
    run([str(bin_dir / "pip"), "install", "-q", str(wheel)], tmp_path)

    # A folder of the user's own, away from the checkout: nothing imports from it.
    work = tmp_path / "work"
    work.mkdir()
    (work / "smoke_tasks.py").write_text("def double(x):\n    return 2 * x\n")
    (work / "in.jsonl").write_text("1\n2\n3\n")
    taskfan = str(bin_dir / "taskfan")
    assert "spread CPU-bound Python work" in run([taskfan, "--help"], work)
    where = run([str(bin_dir / "python"), "-c", "import taskfan; print(taskfan.__file__)"], work)
    assert where.startswith(str(venv)), where

    url = ["--redis-url", redis_url]
    job_id = run([taskfan, "enqueue", "smoke_tasks:double", "-i", "in.jsonl", *url], work).strip()
    run([taskfan, "worker", "--burst", "--processes", "1", *url], work)
    lines = run([taskfan, "results", job_id, *url], work).splitlines()
    assert [json.loads(line)["result"] for line in lines] == [2, 4, 6]
