"""Command-line and environment values that are not UTF-8 text. A byte that
is not UTF-8 in ``argv`` or the environment reaches Python as a lone surrogate
(``'q\\udcff'``), which no Redis key, command or host name can carry: every
command refuses such a name with an error that names it, never a traceback."""

from __future__ import annotations

import pytest

from producer import Client
from taskfan.keys import JobKeys, QueueKeys
from tests.cli_support import invoke

BAD = "q\udcff"  # what Python makes of the bytes b"q\xff" in argv


@pytest.mark.parametrize(
    "args",
    [
        ["enqueue", "tests.tasks:square", "-i", "/dev/null", "--queue", BAD],
        ["dead", BAD],
        ["results", BAD],
        ["inspect", BAD],
        ["cancel", BAD],
        ["retry", BAD],
        ["wait", BAD],
        ["worker", "--queue", BAD],
        ["worker", "--name", BAD],
        ["worker", "--metrics-port", "0", "--metrics-host", "h\udcff"],
    ],
    ids=lambda args: " ".join(a.encode(errors="replace").decode() for a in args),
)
def test_a_name_that_is_not_utf8_is_refused_naming_it(redis_url: str, args: list[str]) -> None:
    result = invoke(*args, "--redis-url", redis_url)
    assert result.exit_code != 0
    assert "not valid UTF-8" in result.stderr, result.stderr
    assert "\\udcff" in result.stderr  # the value, shown as Python shows it


def test_a_redis_url_whose_host_is_not_utf8_is_refused_naming_it() -> None:
    result = invoke("status", "--redis-url", "redis://h\udcff:1/0")
    assert result.exit_code != 0
    assert "Redis URL" in result.stderr and "not valid UTF-8" in result.stderr, result.stderr


def test_the_python_api_refuses_such_names_too(redis_url: str) -> None:
    for make in (lambda: QueueKeys(BAD), lambda: JobKeys(BAD)):
        with pytest.raises(ValueError, match="not valid UTF-8"):
            make()
    with pytest.raises(ValueError, match="not valid UTF-8"):
        Client.from_url(redis_url, queue=BAD)


def test_the_error_for_a_url_that_is_not_utf8_hides_its_password() -> None:
    result = invoke("status", "--redis-url", "redis://:hunter2hunter2@h\udcff:1/0")
    assert result.exit_code != 0 and "not valid UTF-8" in result.stderr, result.stderr
    assert "hunter2" not in result.stderr
