"""``taskfan enqueue``, ``wait`` and ``results``: batch jobs from the shell.

Shell jobs use the json codec. Exit codes: see ``producer.ops.cli_options``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any

import click

from producer.client import Client
from producer.job import Job
from producer.listeners import NobodyWatch
from producer.ops import inputs
from producer.ops.cli_options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    InputFile,
    allow_pickle_option,
    cli_errors,
    input_options,
    interruptible,
    job_options,
    limit_options,
    output_options,
    redis_option,
    secret_option,
)
from producer.ops.local_check import check_if_importable
from producer.ops.outputs import ProgressBar, open_output, write_outcomes
from taskfan.cli import SECONDS, log_options
from taskfan.connection import check
from taskfan.errors import ConfigError, FunctionReferenceError, job_ended
from taskfan.keys import JobKeys
from taskfan.options import CallMode
from taskfan.refs import reference
from taskfan.secret import read_secret_file
from taskfan.settings import Settings
from taskfan.transient import AWAY


def load_settings(
    redis_url: str | None = None,
    queue: str | None = None,
    secret_file: str | None = None,
    **overrides: Any,
) -> Settings:
    """Settings from the environment, options winning; shell jobs use the json codec."""
    if secret_file:
        overrides["secrets"] = read_secret_file(secret_file)
    return Settings.from_env(
        os.environ, redis_url=redis_url, queues=(queue,) if queue else None, **overrides
    )


def open_client(settings: Settings, *, allow_pickle: bool = False) -> Client:
    """A json-codec client for the configured Redis, checked with one PING.

    It reads pickle results only with ``allow_pickle`` (``--allow-pickle``):
    the CLI never runs code from Redis unless told to."""
    if settings.redis_url is None:
        raise ConfigError("no Redis configured: pass --redis-url or set TASKFAN_REDIS_URL")
    client = Client.from_settings(settings.replace(codec="json"), allow_pickle=allow_pickle)
    check(client.redis, settings.redis_url)
    return client


def attach(client: Client, job_id: str) -> Job:
    """The job ``job_id``; JobNotFound or ConfigError for ids that cannot be one."""
    try:
        JobKeys(job_id)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return client.job(job_id)


def enqueue_file(client: Client, function: str, source: InputFile) -> Job:
    """Stream a file's items into a job; a malformed line aborts it (InvalidInput),
    unless ``skip_invalid`` makes it a failed item."""
    fn_ref = reference(function)
    fmt = source.fmt or inputs.detect_format(source.path)
    name = "<stdin>" if source.path == inputs.STDIN else source.path
    mode = CallMode.STAR if source.star or fmt == "csv" else CallMode.ONE
    with inputs.open_input(source.path) as stream:
        items = inputs.read(
            stream, fmt, source=name, csv_types=source.csv_types,
            skip_invalid=source.skip_invalid, max_item_bytes=client.limits.max_item_bytes,
        )  # fmt: skip
        return client.map(fn_ref, items, mode=mode, codec="json")


def progress_bar(progress: bool | None, *, new_job: bool = False) -> ProgressBar:
    """The bar for ``--progress/--no-progress``; make it before enqueueing a new job."""
    enabled = sys.stderr.isatty() if progress is None else progress
    return ProgressBar(sys.stderr, enabled=enabled, counted_from=0 if new_job else None)


def follow(
    job: Job,
    bar: ProgressBar,
    timeout: float | None = None,
    check_alive: Callable[[], None] | None = None,
) -> bool:
    """Wait for the job, drawing progress; False when ``timeout`` passed first.

    ``check_alive`` runs between waits (``run`` uses it to notice a dead worker).
    While no live node serves the job's queue, the bar says so, and a warning is
    logged once after a few seconds (``producer.listeners``).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    nobody = NobodyWatch(job.client.redis, job.meta().queue, job.id)
    try:
        while True:
            step = bar.interval if bar.enabled else 1.0
            if deadline is not None:
                step = max(0.0, min(step, deadline - time.monotonic()))
            if job.wait(timeout=step):
                bar.note = None
                bar.update(*job.progress(), force=True)
                return True
            try:
                bar.note = nobody.check()  # "no live node serves queue Q", while so
                bar.update(*job.progress())
            except AWAY:  # an outage: the next wait rides it out, as waits do
                pass
            if check_alive is not None:
                check_alive()
            if deadline is not None and time.monotonic() >= deadline:
                return False
    finally:
        bar.close()


def summary(job: Job) -> str:
    done, failed, total = job.progress()
    return f"job {job.id}: {done}/{total} items done, {failed} failed"


def write_results(
    job: Job, output: str, *, failed_only: bool = False, timeout: float | None = None
) -> int:
    """Write the outcomes; the exit code they call for. A cancelled job's items
    with no outcome are written as cancelled; then JobCancelled (exit 4), with
    the counts."""
    with open_output(output) as out:
        counts = write_outcomes(job.outcomes(timeout), out, failed_only=failed_only)
    if counts.cancelled:
        meta = job.meta()
        raise job_ended(job.id, meta.state.value, meta.counts)
    return EXIT_FAILED if counts.failed else EXIT_OK


@click.command()
@click.argument("function", metavar="MODULE:FUNC")
@input_options
@job_options
@click.option(
    "--no-check",
    is_flag=True,
    help="Enqueue without checking, where MODULE imports here, that it has FUNC",
)
@click.option("--wait", is_flag=True, help="Wait for the job, then write its outcomes")
@output_options
@click.option(
    "--timeout", type=SECONDS, help="With --wait: give up after this many seconds (exit 3)"
)
@limit_options
@secret_option
@redis_option
@log_options("WARNING")
@interruptible
def enqueue(
    function: str,
    source: InputFile,
    queue: str | None,
    batch_size: int | None,
    chunksize: int | None,
    result_ttl: int | None,
    no_check: bool,
    wait: bool,
    output: str,
    progress: bool | None,
    timeout: float | None,
    max_item_bytes: int | None,
    max_batch_bytes: int | None,
    secret_file: str | None,
    redis_url: str | None,
) -> None:
    """Enqueue MODULE:FUNC over every item of a file; print the job id.

    Worker nodes must be able to import MODULE. With --wait, show progress on
    stderr and write the outcomes as JSONL (exit 0: all succeeded, 1: some failed).

    \b
    Examples:
      JOB=$(taskfan enqueue examples.tasks:collatz_steps --input examples/inputs.jsonl)
      taskfan enqueue mymod:score --input rows.csv --csv-types auto --wait -o out.jsonl
      seq 100 | taskfan enqueue mymod:fn --input - --format lines --wait
    """
    bar = progress_bar(progress, new_job=True)
    with cli_errors():
        settings = load_settings(
            redis_url, queue, secret_file, batch_size=batch_size, chunksize=chunksize,
            result_ttl=result_ttl, max_item_bytes=max_item_bytes, max_batch_bytes=max_batch_bytes,
        )  # fmt: skip
        if not no_check:
            try:
                check_if_importable(function, settings.paths)
            except FunctionReferenceError as exc:
                raise ConfigError(f"{exc}; --no-check enqueues it anyway") from None
        client = open_client(settings)
        job = enqueue_file(client, function, source)
    if not wait:
        click.echo(job.id)
        return
    click.echo(f"job {job.id}: enqueued on queue {client.queue}", err=True)
    sys.exit(_wait_and_write(job, output, bar, timeout))


def _wait_and_write(job: Job, output: str, bar: ProgressBar, timeout: float | None) -> int:
    try:
        with cli_errors():
            if not follow(job, bar, timeout):
                click.echo(f"{summary(job)}: timed out after {timeout}s", err=True)
                return EXIT_TIMEOUT
            click.echo(summary(job), err=True)
            return write_results(job, output)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; the job goes on: taskfan wait {job.id}", err=True)
        return EXIT_INTERRUPTED


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option("--timeout", type=SECONDS, help="Give up after this many seconds (exit 3)")
@click.option(
    "--progress/--no-progress", default=None, help="Progress on stderr (default: on a terminal)"
)
@redis_option
@log_options("WARNING")
@interruptible
def wait(job_id: str, timeout: float | None, progress: bool | None, redis_url: str | None) -> None:
    """Wait until every item of JOB has an outcome.

    Exit 0 when every item succeeded, 1 when some failed, 3 on timeout.

    \b
    Example:
      JOB=$(taskfan enqueue mymod:fn --input items.jsonl)
      taskfan wait "$JOB" --timeout 600 --progress && echo "all good"
    """
    with cli_errors():
        client = open_client(load_settings(redis_url))
        job = attach(client, job_id)
        if not follow(job, progress_bar(progress), timeout):
            click.echo(f"{summary(job)}: timed out after {timeout}s", err=True)
            sys.exit(EXIT_TIMEOUT)
        click.echo(summary(job), err=True)
        sys.exit(EXIT_FAILED if job.progress().failed else EXIT_OK)


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option(
    "--output", "-o", default="-", show_default=True, help="File for the JSONL; '-' is stdout"
)
@click.option("--failed-only", is_flag=True, help="Write only the failed items")
@click.option(
    "--timeout",
    type=SECONDS,
    help="Give up waiting for unfinished batches after this many seconds (exit 3)",
)
@allow_pickle_option
@secret_option
@redis_option
@log_options("WARNING")
@interruptible
def results(
    job_id: str,
    output: str,
    failed_only: bool,
    timeout: float | None,
    allow_pickle: bool,
    secret_file: str | None,
    redis_url: str | None,
) -> None:
    """Write the outcomes of JOB as JSONL, one line per item in input order.

    Outcomes stream out as their batches finish. Exit 0 when every item
    succeeded, 1 when some failed. Results of pickle jobs are read only with
    --allow-pickle (unpickling runs code).

    \b
    Example:
      taskfan results "$JOB" --failed-only -o failed.jsonl
    """
    with cli_errors():
        settings = load_settings(redis_url, secret_file=secret_file)
        client = open_client(settings, allow_pickle=allow_pickle)
        job = attach(client, job_id)
        try:
            code = write_results(job, output, failed_only=failed_only, timeout=timeout)
        except FuturesTimeout:
            click.echo(f"{summary(job)}: timed out after {timeout}s", err=True)
            code = EXIT_TIMEOUT
    sys.exit(code)
