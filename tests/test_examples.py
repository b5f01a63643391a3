"""The example programs, run as their README says: scripts from the repository
root, against a cluster named by TASKFAN_REDIS_URL."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from examples.map_primes import PRIMES, is_prime
from examples.tasks import pow_task
from tests.cli_support import REPO, clean_env, clean_environ, invoke
from tests.conftest import StartWorker

pytestmark = pytest.mark.usefixtures("clean_env")
__all__ = ["clean_env"]


def run_example(script: str, *args: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, f"examples/{script}", *args], cwd=REPO, capture_output=True, text=True,
        env=clean_environ(TASKFAN_REDIS_URL=redis_url), timeout=120,
    )  # fmt: skip


def test_the_seed_programs_run_on_a_cluster(redis_url: str, start_worker: StartWorker) -> None:
    start_worker(processes=2)
    done = run_example("submit.py", redis_url=redis_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{pow(323, 1235)}\n"

    done = run_example("map_primes.py", redis_url=redis_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{n} is prime: {is_prime(n)}" for n in PRIMES]

    done = run_example("pow_bench.py", "2", "10", "300", "20", redis_url=redis_url)
    assert done.returncode == 0, done.stderr
    assert "ProcessPoolExecutor(2):" in done.stdout
    assert "taskfan Executor:" in done.stdout
    assert run_example("pow_bench.py", "2", redis_url=redis_url).returncode == 2


def test_generated_inputs_feed_the_cli(redis_url: str, start_worker: StartWorker) -> None:
    start_worker(processes=1)
    made = subprocess.run(
        [sys.executable, "examples/make_inputs.py", "pow", "50", "--num-calc", "7"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    params = [json.loads(line) for line in made.stdout.splitlines()]
    assert len(params) == 50 and all(p[1] == 7 and 0 <= p[0] < 1 for p in params)
    result = invoke(
        "enqueue", "examples.tasks:pow_task", "-i", "-", "--wait", "--redis-url", redis_url,
        input=made.stdout,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    got = [json.loads(line)["result"] for line in result.stdout.splitlines()]
    assert got == [pow_task(p) for p in params]
