"""``taskfan worker``: run a worker node."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from taskfan.cli import BYTE_SIZE, CliError, log_options, warn_secret_argument
from taskfan.connection import check, connect, redact
from taskfan.errors import BrokerUnavailable, ConfigError
from taskfan.secret import read_secret_file
from taskfan.settings import Settings
from worker.node.node import Node
from worker.sources import registry


def source_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of every source of batches (``worker.sources.registry``); each
    names a ``Settings`` field, passed on with the others."""
    for option in reversed(registry.cli_options()):
        command = option(command)
    return command


@click.command()
@click.option(
    "--redis-url",
    help="Redis URL: redis[s]://, redis[s]+cluster://, redis[s]+sentinel:// "
    "(docs/scaling.md) [env: TASKFAN_REDIS_URL]",
)
@click.option(
    "--queue",
    "-q",
    "queues",
    multiple=True,
    help="Queue to serve; repeat for several, in priority order [env: TASKFAN_QUEUE]",
)
@click.option(
    "--processes",
    "-p",
    type=int,
    help="Pool processes (default: CPU count) [env: TASKFAN_PROCESSES]",
)
@click.option(
    "--max-tasks-per-child",
    type=int,
    help="Chunks a pool process runs before it is replaced by a fresh one (default: "
    "never) [env: TASKFAN_MAX_TASKS_PER_CHILD]",
)
@click.option(
    "--chunksize",
    "-c",
    type=int,
    help="Items per pool message (default: measured per function) [env: TASKFAN_CHUNKSIZE]",
)
@click.option(
    "--burst",
    is_flag=True,
    default=None,
    help="Exit once the queues are empty and nothing is in flight",
)
@click.option(
    "--path",
    "paths",
    multiple=True,
    help="Folder to import task modules from (default: .) [env: TASKFAN_PATH]",
)
@click.option(
    "--start-method",
    type=click.Choice(["fork", "forkserver", "spawn"]),
    help="Pool start method (default: forkserver on Linux) [env: TASKFAN_START_METHOD]",
)
@click.option(
    "--visibility-timeout",
    type=float,
    help="Seconds before a silent node's batches are reclaimed [env: TASKFAN_VISIBILITY_TIMEOUT]",
)
@click.option(
    "--max-deliveries",
    type=int,
    help="Deliveries of a batch before it is dead-lettered (default 5) "
    "[env: TASKFAN_MAX_DELIVERIES]",
)
@click.option(
    "--max-entry-age",
    type=int,
    help="With a secret: seconds after its issue a signed batch is refused as a replay "
    "(default: the result TTL) [env: TASKFAN_MAX_ENTRY_AGE]",
)
@click.option(
    "--grace-period",
    type=float,
    help="Seconds a stopping node finishes its batches before handing the rest back "
    "(default 30) [env: TASKFAN_GRACE_PERIOD]",
)
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False),
    help="File of shared secrets, one per line: run only batches signed with one, sign "
    "results with the first [env: TASKFAN_SECRET_FILE, or the secret in TASKFAN_SECRET]",
)
@click.option(
    "--no-pickle",
    is_flag=True,
    default=None,
    help="Refuse batches that use the pickle codec [env: TASKFAN_NO_PICKLE]",
)
@click.option(
    "--allow",
    "allow",
    multiple=True,
    metavar="MODULE",
    help="Run only functions from MODULE or its submodules; repeat for several "
    "[env: TASKFAN_ALLOW, comma-separated]",
)
@click.option(
    "--allow-by-value",
    is_flag=True,
    default=None,
    help="With --allow, also run functions producers send by value (lambdas, closures: "
    "code shipped through Redis, outside the allowlist; sign batches) "
    "[env: TASKFAN_ALLOW_BY_VALUE]",
)
@click.option(
    "--max-item-bytes",
    type=BYTE_SIZE,
    help="Largest result of one item, e.g. 16M (default 16 MiB) [env: TASKFAN_MAX_ITEM_BYTES]",
)
@click.option(
    "--max-batch-bytes",
    type=BYTE_SIZE,
    help="Largest batch payload and batch result, e.g. 64M (default 64 MiB) "
    "[env: TASKFAN_MAX_BATCH_BYTES]",
)
@click.option(
    "--max-decoded-bytes",
    type=BYTE_SIZE,
    help="Most the items of the batches held may take decoded, by an estimate made "
    "before decoding, e.g. 512M (default 16 x --max-batch-bytes) "
    "[env: TASKFAN_MAX_DECODED_BYTES]",
)
@source_options
@click.option("--name", "node_name", help="Node name (default: host-pid-random)")
@click.option(
    "--metrics-port",
    type=int,
    help="Serve Prometheus metrics on this port (default: off) [env: TASKFAN_METRICS_PORT]",
)
@click.option(
    "--metrics-host",
    help="Address the metrics server binds (default: 0.0.0.0, every interface) "
    "[env: TASKFAN_METRICS_HOST]",
)
@log_options("INFO")
def worker(
    queues: tuple[str, ...],
    paths: tuple[str, ...],
    secret_file: str | None,
    allow: tuple[str, ...],
    **options: object,
) -> None:
    """Run a worker node: read batches from Redis and run them on a process pool.

    \b
    Example:
      taskfan worker --redis-url redis://localhost:6379/0 --queue default --processes 4
      taskfan worker --secret-file /etc/taskfan/secret --no-pickle --allow myapp
    """
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # libraries a source drives that log a line per job: not for operators
        for name in registry.chatty_loggers():
            logging.getLogger(name).setLevel(logging.WARNING)
    # an option given no value (a repeatable one: ()) leaves the setting to the environment
    options = {name: None if value == () else value for name, value in options.items()}
    given_url = options.get("redis_url")
    warn_secret_argument(given_url if isinstance(given_url, str) else None)
    try:
        settings = Settings.from_env(
            os.environ,
            queues=queues or None,
            paths=paths or None,
            secrets=read_secret_file(secret_file) if secret_file else None,
            allow=allow or None,
            **options,
        )
        if settings.redis_url is None:
            raise ConfigError("no Redis configured: pass --redis-url or set TASKFAN_REDIS_URL")
        client = connect(settings.redis_url, block_seconds=settings.block_seconds)
        check(client, settings.redis_url)
        node = Node(settings, client)
    except (ConfigError, BrokerUnavailable) as exc:
        raise CliError(str(exc)) from None
    node.install_signal_handlers()
    click.echo(f"taskfan worker {node.id} on {redact(settings.redis_url)}", err=True)
    try:
        code = node.run()
    except ConfigError as exc:  # e.g. the metrics port is taken
        raise CliError(str(exc)) from None
    sys.exit(code)
