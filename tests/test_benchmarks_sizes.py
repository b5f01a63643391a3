"""The sizing benchmarks keep working: ``benchmarks.interleaved`` and
``benchmarks.many_nodes`` end to end at tiny sizes (their figures are in
docs/performance.md and docs/scaling.md; nothing here judges a timing)."""

from __future__ import annotations

import subprocess
import sys

from benchmarks.redis_load import _fit
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
              "--repeats", "1", "--fixed", "5x1", "--probe-items", "40",
              "--probe-sizes", "2,20")  # fmt: skip
    assert "Capacity(nodes=2, processes=1)" in out  # the producer counts the nodes
    assert "automatic, cost published: median" in out and "batch 5 x chunk 1: median" in out
    # what Redis spent, per setting and split by the probe
    assert "- batch 5 x chunk 1 (4 batches, 20 items): Redis CPU " in out
    assert "probe: no-op jobs of 40 items at batch sizes [2, 20]" in out
    assert "µs per batch + " in out and "evalsha" in out


def test_the_probe_splits_cpu_into_per_batch_and_per_item() -> None:
    # cpu = batches x 100 µs + items x 2 µs, exactly: the fit finds both
    rows = [(b, i, b * 100e-6 + i * 2e-6) for b, i in ((20, 200), (2, 200), (50, 1000))]
    per_batch, per_item = _fit(rows)
    assert abs(per_batch - 100e-6) < 1e-9 and abs(per_item - 2e-6) < 1e-9
