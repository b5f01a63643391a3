"""The sizing benchmarks keep working: ``benchmarks.interleaved`` and
``benchmarks.many_nodes`` end to end at tiny sizes (their figures are in
docs/performance.md and docs/scaling.md; nothing here judges a timing)."""

from __future__ import annotations

import subprocess
import sys

from tests.workers import REPO


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_interleaved_run_reports_each_workload() -> None:
    out = run("benchmarks.interleaved", "--rounds", "1", "--quick")
    for name in "abc":
        assert f"| ({name}) |" in out


def test_the_many_nodes_run_reports_automatic_and_fixed_sizes() -> None:
    out = run("benchmarks.many_nodes", "--nodes", "2", "--items", "20", "--seconds", "0.01",
              "--repeats", "1", "--fixed", "5x1")  # fmt: skip
    assert "Capacity(nodes=2, processes=1)" in out  # the producer counts the nodes
    assert "automatic, cost published: median" in out and "batch 5 x chunk 1: median" in out
