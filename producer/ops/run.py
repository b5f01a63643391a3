"""``taskfan run``: the all-in-one main job on this machine.

Uses the configured Redis, or with none starts an embedded ``redis-server``
(``taskfan.server``) for the run, on a unix socket in a private folder (no TCP
port, so no other user can reach it); starts a local worker node as a ``taskfan
worker --no-pickle`` subprocess (producer/ never imports worker/), told the
Redis URL through its environment, never its command line; enqueues the file, shows
progress, writes the outcomes, and stops what it started, in that order:

- job done: SIGTERM to the worker (nothing is in flight, it exits at once);
- Ctrl-C, SIGTERM or an error: SIGINT then SIGTERM to the worker, which makes a
  node stop cold and hand its unfinished batches back (a second SIGTERM after
  0.5 s, for a worker that keeps an inherited SIGINT ignored), then SIGKILL
  after a grace period (its pool processes die with it); SIGINT and SIGTERM are ignored
  while this cleanup runs, so a second Ctrl-C cannot leave strays.
- then the embedded server, if any: SIGTERM, SIGKILL after a timeout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import TracebackType
from typing import Any

import click

from producer.ops.cli import (
    enqueue_file,
    follow,
    load_settings,
    open_client,
    progress_bar,
    summary,
    write_results,
)
from producer.ops.cli_options import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
    InputFile,
    cli_errors,
    input_options,
    job_options,
    limit_options,
    output_options,
    redis_option,
    secret_option,
)
from producer.ops.local_check import check_importable
from taskfan.cli import LOGGING_META, log_options, warn_secret_argument
from taskfan.connection import check, connect, redact
from taskfan.errors import FunctionReferenceError
from taskfan.lifeline import tied
from taskfan.server import RedisServer
from taskfan.settings import Settings

#: seconds a worker gets to stop before SIGKILL: after the job, and when interrupted
STOP_GRACE = 10.0
INTERRUPT_GRACE = 5.0
#: seconds after which an interrupted worker still running gets a second SIGTERM
SECOND_SIGNAL_AFTER = 0.5


class LocalCluster:
    """A Redis (configured, or embedded) and one worker subprocess, for one run."""

    def __init__(self, settings: Settings, worker_args: tuple[str, ...] = ()) -> None:
        self.settings = settings
        #: extra options for the worker (its secret file, its limits)
        self.worker_args = worker_args
        self.server: RedisServer | None = None
        self.worker: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.server is not None:
            return self.server.url
        assert self.settings.redis_url is not None
        return self.settings.redis_url

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop(interrupted=True)
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # The reader of the outcomes gone (| head) is no emergency: the job is done.
        self.stop(interrupted=kind is not None and not issubclass(kind, BrokenPipeError))

    def start(self) -> None:
        if self.settings.redis_url is None:
            # No TCP port: a unix socket in a folder only this user can enter.
            self.server = RedisServer(tied=True, unix_socket=True).start()
            click.echo(
                f"no Redis configured: using an embedded redis-server {self.server.version} "
                f"on the unix socket {self.server.socket} (a private folder, no TCP port)",
                err=True,
            )
            self.settings = self.settings.replace(redis_url=self.server.url)
        else:
            # One PING first: a wrong URL is one line, before any worker starts.
            url = self.settings.redis_url
            probe = connect(url, block_seconds=self.settings.block_seconds)
            try:
                check(probe, url)
            finally:
                probe.close()
            click.echo(f"using Redis at {redact(url)}", err=True)
        # The URL (and any password in it) goes in the environment: every user
        # can read a command line in /proc. The worker refuses pickle: the CLI
        # enqueues json, and pickle from Redis runs code.
        command = [
            sys.executable, "-m", "taskfan", "worker", "--no-pickle",
            "--processes", str(self.settings.processes),
            "--name", f"run-{os.getpid()}",
            *[arg for queue in self.settings.queues for arg in ("--queue", queue)],
            *self.worker_args,
        ]  # fmt: skip
        # The worker's stdout (a task's print calls) goes to our stderr: stdout
        # may be carrying the outcomes. It stays in our process group, so a
        # Ctrl-C in a terminal reaches it too.
        env = {**os.environ, "TASKFAN_BURST": "0", "TASKFAN_REDIS_URL": self.url}
        # Should we be SIGKILLed, the worker is told too: SIGTERM hands its batches
        # back to a configured Redis; with the embedded one there is nothing to keep.
        command = tied(command, signal.SIGKILL if self.server else signal.SIGTERM)
        self.worker = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=2, env=env)

    def check_worker(self) -> None:
        """Raise when the worker exited on its own (it can then finish nothing)."""
        if self.worker is not None and self.worker.poll() is not None:
            raise CliError(
                f"the local worker exited with code {self.worker.returncode} "
                "before the job finished (see its messages above)"
            )

    def stop(self, interrupted: bool) -> None:
        """Stop the worker, then the embedded server; each escalates to SIGKILL."""
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._stop_worker(interrupted)
            if self.server is not None:
                self.server.stop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _stop_worker(self, interrupted: bool) -> None:
        proc = self.worker
        if proc is None or proc.poll() is not None:
            return
        grace = STOP_GRACE
        if interrupted:
            proc.send_signal(signal.SIGINT)  # stop reading ...
            proc.send_signal(signal.SIGTERM)  # ... and, a second signal, hand back at once
            # A worker that inherited SIGINT ignored (run started in the background)
            # keeps it ignored and took the SIGTERM as its first signal: one more.
            if _exits_within(proc, SECOND_SIGNAL_AFTER):
                return
            proc.send_signal(signal.SIGTERM)
            grace = INTERRUPT_GRACE - SECOND_SIGNAL_AFTER
        else:
            proc.send_signal(signal.SIGTERM)
        if not _exits_within(proc, grace):
            proc.kill()
            proc.wait()


def _exits_within(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


def _worker_args(settings: Settings, secret_file: str | None) -> tuple[str, ...]:
    """Options of ``run`` the local worker needs too (the environment it inherits)."""
    level, fmt = click.get_current_context().meta.get(LOGGING_META, ("WARNING", "text"))
    args = ["--log-level", level, "--log-format", fmt]
    args += ["--max-item-bytes", str(settings.max_item_bytes)]
    args += ["--max-batch-bytes", str(settings.max_batch_bytes)]
    for path in settings.paths:
        args += ["--path", os.path.abspath(path)]
    if secret_file:
        args += ["--secret-file", os.path.abspath(secret_file)]
    return tuple(args)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@click.command()
@click.argument("function", metavar="MODULE:FUNC")
@input_options
@job_options
@click.option(
    "--processes",
    "-p",
    type=int,
    help="Processes of the local worker (default: CPU count) [env: TASKFAN_PROCESSES]",
)
@click.option(
    "--path",
    "paths",
    multiple=True,
    help="Folder to import task modules from, for the check and the local worker; repeat "
    "for several (default: .) [env: TASKFAN_PATH]",
)
@output_options
@limit_options
@secret_option
@redis_option
@log_options("WARNING")
def run(
    function: str,
    source: InputFile,
    queue: str | None,
    batch_size: int | None,
    chunksize: int | None,
    result_ttl: int | None,
    processes: int | None,
    paths: tuple[str, ...],
    output: str,
    progress: bool | None,
    max_item_bytes: int | None,
    max_batch_bytes: int | None,
    secret_file: str | None,
    redis_url: str | None,
) -> None:
    """Run MODULE:FUNC over a file on this machine, start to finish.

    Uses the configured Redis (--redis-url, TASKFAN_REDIS_URL) or, with none,
    an embedded redis-server just for this run (a unix socket only this user
    can reach); starts a local worker node that refuses pickle,
    enqueues, shows progress, writes the outcomes as JSONL, and stops everything
    it started, also on Ctrl-C. Exit 0: all succeeded, 1: some failed.

    \b
    Example:
      taskfan run examples.tasks:collatz_steps --input examples/inputs.jsonl -o out.jsonl
    """
    signal.signal(signal.SIGTERM, _interrupt)
    warn_secret_argument(redis_url)
    with cli_errors():
        settings = load_settings(
            redis_url, queue, secret_file, batch_size=batch_size, chunksize=chunksize,
            result_ttl=result_ttl, processes=processes, max_item_bytes=max_item_bytes,
            max_batch_bytes=max_batch_bytes, paths=paths or None,
        )  # fmt: skip
        try:
            check_importable(function, settings.paths)
        except FunctionReferenceError as exc:
            raise CliError(f"{exc}") from None
    code = EXIT_OK
    job = None
    try:
        with cli_errors(), LocalCluster(settings, _worker_args(settings, secret_file)) as cluster:
            client = open_client(cluster.settings)
            bar = progress_bar(progress, new_job=True)
            job = enqueue_file(client, function, source)
            follow(job, bar, check_alive=cluster.check_worker)
            click.echo(summary(job), err=True)
            code = write_results(job, output)
    except KeyboardInterrupt:
        where = "" if job is None else f" (job {job.id})"
        if settings.redis_url is None:
            click.echo(
                f"\ninterrupted{where}: stopped the worker and the embedded server", err=True
            )
        else:
            click.echo(f"\ninterrupted{where}: the job stays in Redis for other nodes", err=True)
        code = EXIT_INTERRUPTED
    sys.exit(code)
