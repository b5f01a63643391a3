"""Logs for operators: --log-level, --log-format text|json, one INFO line per batch at
most, and every warning about a batch names its job and batch."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from typing import Any

import click
import pytest

from producer import Client
from taskfan.cli import configure_logging, log_options
from taskfan.logs import JsonFormatter, batch_extra
from tests import tasks
from tests.cli_support import clean_env, invoke
from tests.conftest import StartWorker
from tests.helpers import wait_until

NAMES_BATCH = re.compile(r"job \S+ batch \S+")

pytestmark = pytest.mark.usefixtures("clean_env")
__all__ = ["clean_env"]


def record(level: int, message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("worker.node", level, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_the_message_and_the_batch_fields() -> None:
    line = JsonFormatter().format(
        record(logging.WARNING, "job %s batch %s: bad", "j1", 3, **batch_extra("j1", 3))
    )
    data = json.loads(line)
    assert data["level"] == "WARNING" and data["logger"] == "worker.node"
    assert data["message"] == "job j1 batch 3: bad"
    assert (data["job"], data["batch"]) == ("j1", "3")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["ts"])
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = record(logging.ERROR, "it failed")
        rec.exc_info = sys.exc_info()
    data = json.loads(JsonFormatter().format(rec))
    assert "ValueError: boom" in data["exc"] and "job" not in data


def test_configure_logging_json_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("t").info("hello %s", "there", extra={"job": "j"})
    logging.getLogger("t").debug("not shown")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and json.loads(err[0])["message"] == "hello there"
    configure_logging("WARNING", "text")
    logging.getLogger("t").warning("plain")
    assert re.fullmatch(r"\d\d:\d\d:\d\d WARNING t: plain\n", capsys.readouterr().err)
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure_logging("INFO", "xml")


def test_every_command_takes_the_log_options_and_their_variables(redis_url: str) -> None:
    for command in ("status", "jobs", "nodes", "enqueue", "wait", "results", "cancel",
                    "retry", "purge", "run", "worker", "dead", "inspect", "dashboard"):  # fmt: skip
        help_text = invoke(command, "--help").stdout
        assert "--log-format [text|json]" in help_text, command
        assert "TASKFAN_LOG_LEVEL" in help_text, command
    bad = invoke("status", "--redis-url", redis_url, env={"TASKFAN_LOG_FORMAT": "xml"})
    assert bad.exit_code == 2 and "'xml' is not one of 'text', 'json'" in bad.stderr

    seen: list[str] = []

    @click.command()
    @log_options("ERROR")
    def probe() -> None:
        seen.append(logging.getLevelName(logging.getLogger().level))

    from click.testing import CliRunner

    CliRunner().invoke(probe, [], env={"TASKFAN_LOG_LEVEL": "debug"}, catch_exceptions=False)
    CliRunner().invoke(probe, [], catch_exceptions=False)
    assert seen == ["DEBUG", "ERROR"]


def test_a_node_logs_one_info_line_per_batch_and_names_job_and_batch_in_warnings(
    client: Client, start_worker: StartWorker
) -> None:
    # 12 batches of 10; item 13 segfaults its process and item 31 exits it: warnings
    # while the node rebuilds its pool and isolates them (bisection), two failed items.
    worker = start_worker("--log-format", "json", "--log-level", "INFO", processes=2)
    job = client.map(tasks.crash_on, range(120), batch_size=10, chunksize=5)
    assert job.wait(timeout=120)
    assert job.progress() == (120, 2, 120)  # 13 segfaults, 31 exits

    def info_lines() -> int:
        return sum('"batch": ' in ln and '"INFO"' in ln for ln in worker.log().splitlines())

    wait_until(
        lambda: info_lines() >= 12,
        timeout=30,
        message=lambda: f"an INFO line per batch:\n{worker.log()}",
    )
    assert worker.stop() == 0
    lines = [ln for ln in worker.log().splitlines() if ln.startswith("{")]
    records = [json.loads(ln) for ln in lines]
    assert records, worker.log()
    per_batch = Counter(
        (r["job"], r["batch"]) for r in records if r["level"] == "INFO" and "batch" in r
    )
    assert per_batch == Counter({(job.id, str(b)): 1 for b in range(12)})
    infos = [r for r in records if r["level"] == "INFO"]
    # Besides one line per batch: the node's start and stop lines; and, when the
    # suite itself runs in the background (SIGINT ignored, and so in the node),
    # the node's line saying how to stop it instead.
    infos = [r for r in infos if not r["message"].startswith("SIGINT is ignored")]
    assert len(infos) - 12 <= 4, [r["message"] for r in infos]
    warnings = [r for r in records if r["level"] == "WARNING"]
    # The node's one warning at start: it runs unsigned pickle (docs/security.md).
    opened = [w for w in warnings if "this node is open" in w["message"]]
    assert len(opened) == 1 and "job" not in opened[0]
    warnings = [w for w in warnings if w not in opened]
    died = {
        (w["batch"], w["message"].split(": ", 1)[1]) for w in warnings if "died: " in w["message"]
    }
    assert ("1", "worker process died: signal 11 (SIGSEGV)") in died
    assert ("3", "worker process died: exit code 3") in died
    for warning in warnings:
        # "a pool process died" names the chunk that noticed: any chunk in the pool.
        assert warning["job"] == job.id and warning["batch"] in {str(b) for b in range(12)}
        assert warning["message"].startswith(f"job {job.id} batch {warning['batch']} "), warning
        assert NAMES_BATCH.search(warning["message"]), warning
    done_lines = [r for r in infos if r.get("items") is not None]
    assert sum(r["items"] for r in done_lines) == 120
    assert sum(r["failed"] for r in done_lines) == 2
