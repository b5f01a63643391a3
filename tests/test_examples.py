"""The example programs, run as their README says: scripts from the repository
root, against a cluster named by TASKFAN_REDIS_URL."""

from __future__ import annotations

import difflib
import json
import subprocess
import sys

import pytest

from examples.map_primes import PRIMES
from examples.tasks import pow_task
from producer import Executor
from tests.cli_support import REPO, clean_env, clean_environ, invoke
from tests.conftest import StartWorker

pytestmark = pytest.mark.usefixtures("clean_env")
__all__ = ["clean_env"]


def run_example(script: str, *args: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, f"examples/{script}", *args], cwd=REPO, capture_output=True, text=True,
        env=clean_environ(TASKFAN_REDIS_URL=redis_url), timeout=120,
    )  # fmt: skip


#: the Python docs' answers for examples.map_primes.PRIMES
PRIMES_OUTPUT = [
    "112272535095293 is prime: True",
    "112582705942171 is prime: True",
    "112272535095293 is prime: True",
    "115280095190773 is prime: True",
    "115797848077099 is prime: True",
    "1099726899285419 is prime: False",
]
SEED_PROGRAMS = ("submit.py", "map_primes.py", "pow_bench.py")


@pytest.mark.parametrize("name", SEED_PROGRAMS)
def test_each_seed_program_is_its_stdlib_original_with_one_line_changed(name: str) -> None:
    original = (REPO / "examples" / "stdlib" / name).read_text().splitlines()
    swapped = (REPO / "examples" / name).read_text().splitlines()
    changes = [
        (tag, original[i1:i2], swapped[j1:j2])
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=original, b=swapped).get_opcodes()
        if tag != "equal"
    ]
    assert changes == [
        (
            "replace",
            ["from concurrent.futures import ProcessPoolExecutor"],
            ["from producer import Executor as ProcessPoolExecutor"],
        )
    ]


def test_the_seed_programs_run_on_a_cluster(redis_url: str, start_worker: StartWorker) -> None:
    start_worker(processes=2)
    done = run_example("submit.py", redis_url=redis_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{pow(323, 1235)}\n"
    local = run_example("stdlib/submit.py", redis_url=redis_url)
    assert local.returncode == 0, local.stderr
    assert done.stdout == local.stdout

    done = run_example("map_primes.py", redis_url=redis_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == PRIMES_OUTPUT
    assert [line.split()[0] for line in PRIMES_OUTPUT] == [str(n) for n in PRIMES]

    for script in ("pow_bench.py", "stdlib/pow_bench.py"):
        done = run_example(script, "2", "10", "300", "20", redis_url=redis_url)
        assert done.returncode == 0, done.stderr
        timing, checksum = done.stdout.splitlines()
        assert timing.startswith("300 tasks of 20 pow() rounds, chunksize 10: ")
        assert checksum.endswith(" of 300 results")
        assert run_example(script, "2", redis_url=redis_url).returncode == 2


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


def test_a_positional_max_workers_swaps_too(
    redis_url: str, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ProcessPoolExecutor(4)`` with taskfan's class imported in its place: the
    number is max_workers (ignored, checked as the stdlib does), the Redis the
    environment's."""
    start_worker(processes=1)
    monkeypatch.setenv("TASKFAN_REDIS_URL", redis_url)
    with Executor(2) as executor:
        assert executor.submit(pow, 2, 5).result(timeout=60) == 32
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        Executor(0)
