"""Operator commands given absurd numbers: a timeout of NaN (which never
passes: every comparison with it is false) or below zero, a list limit below
one or past any integer Redis takes, a port outside 0-65535. Each is refused
at the command line with the option named, never a traceback, a wait that
ignores its timeout, or a listing of everything."""

from __future__ import annotations

import subprocess

import pytest

from producer import Client
from tests import tasks
from tests.cli_support import invoke, taskfan


@pytest.mark.parametrize("value", ["nan", "-1"])
def test_wait_refuses_a_timeout_that_is_not_a_number_of_seconds(redis_url: str, value: str) -> None:
    job = Client.from_url(redis_url, queue="nobody").map(tasks.square, [1])
    done = subprocess.run(
        taskfan("wait", job.id, "--timeout", value, "--redis-url", redis_url),
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--timeout" in done.stderr and value in done.stderr, done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["results", "JOB", "--timeout", "nan"],
        ["enqueue", "tests.tasks:square", "-i", "/dev/null", "--wait", "--timeout", "nan"],
        ["jobs", "--limit", "-5"],
        ["jobs", "--limit", "0"],
        ["jobs", "--limit", "100000000000000000000000"],
        ["dead", "default", "--limit", "100000000000000000000000"],
        ["status", "--limit", "100000000000000000000000"],
        ["dashboard", "--port", "70000"],
        ["dashboard", "--port", "-1"],
    ],
    ids=lambda args: " ".join(args),
)
def test_absurd_numbers_are_refused_naming_the_option(redis_url: str, args: list[str]) -> None:
    args = [a.replace("JOB", "0123456789abcdef") for a in args]
    result = invoke(*args, "--redis-url", redis_url)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    option = next(a for a in args if a.startswith("--") and a != "--wait")
    assert f"Invalid value for '{option}'" in result.stderr, result.stderr
