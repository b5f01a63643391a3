"""The ``taskfan`` command line: the root group.

Each command lives with the role it serves (``worker.cli``, ``producer.ops.cli``) and
is imported only when it runs, so ``taskfan --help`` stays fast and the roles
never import each other.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import math
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from taskfan import __version__
from taskfan.fields import MAX_COUNT
from taskfan.limits import parse_size
from taskfan.logs import FORMATS, formatter
from taskfan.urls import redact

#: command name -> "module:attribute" of its click command
COMMANDS: dict[str, str] = {
    "worker": "worker.cli:worker",
    "enqueue": "producer.ops.cli:enqueue",
    "wait": "producer.ops.cli:wait",
    "results": "producer.ops.cli:results",
    "status": "producer.ops.status:status",
    "run": "producer.ops.run:run",
    "cancel": "producer.ops.cli_admin:cancel",
    "retry": "producer.ops.cli_admin:retry",
    "purge": "producer.ops.cli_admin:purge",
    "nodes": "producer.ops.cli_ops:nodes",
    "jobs": "producer.ops.cli_ops:jobs",
    "inspect": "producer.ops.cli_ops:inspect",
    "dead": "producer.ops.cli_dead:dead",
    "dashboard": "producer.ops.dashboard:dashboard",
    "acl": "taskfan.acl:acl",
}


def reader_gone() -> NoReturn:
    """Exit 0 without a word: whoever read stdout stopped early (``| head``).

    Standard tools end quietly there; click would exit 1, which reads as "some
    items failed". What is still buffered goes to /dev/null, so the final flush
    at exit cannot fail again.
    """
    with contextlib.suppress(OSError, ValueError):  # ValueError: no real fd (tests)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    sys.exit(EXIT_OK)


class LazyGroup(click.Group):
    """A group whose commands are imported when first used; a closed stdout
    (``taskfan results J | head``) ends any of them quietly with exit 0."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:  # --help is written while the arguments are parsed
            return super().make_context(info_name, args, parent, **extra)
        except BrokenPipeError:
            reader_gone()

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            finally:  # fail here, not at exit, when what is buffered has no reader
                sys.stdout.flush()
        except BrokenPipeError:
            reader_gone()

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


class ByteSize(click.ParamType):
    """A size in bytes: ``16777216``, ``16M``, ``16MiB``, ``512k``."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


BYTE_SIZE = ByteSize()


class Seconds(click.ParamType):
    """A wait in seconds: from 0, ``inf`` for no limit. NaN is refused: no
    deadline made of it ever passes (every comparison with it is false)."""

    name = "seconds"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if math.isnan(seconds) or seconds < 0:
            self.fail(f"{value!r} is not a number of seconds from 0", param, ctx)
        return seconds


SECONDS = Seconds()
#: a count of things listed: at least one, at most what Redis ranges take
LIMIT = click.IntRange(1, MAX_COUNT)
PORT = click.IntRange(0, 65535)

#: exit codes of every command (docs/cli.md#exit-codes)
EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_TIMEOUT, EXIT_CANCELLED = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130


class CliError(click.ClickException):
    """One line on stderr and exit code 2: nothing about items to report."""

    exit_code = EXIT_ERROR


def configure_logging(level: str, fmt: str = "text") -> None:
    """Set up logging for a command; libraries never do this themselves.

    ``fmt`` is ``text`` (one readable line) or ``json`` (one object a line; see
    ``taskfan.logs``).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
#: key of ``click.Context.meta`` holding the command's (log level, log format)
LOGGING_META = "taskfan.logging"


def warn_secret_argument(url: str | None, option: str = "--redis-url") -> None:
    """Warn when a URL given on the command line holds a password: every user of
    the machine can read a command line (``ps``, ``/proc/PID/cmdline``) while a
    long-running command (a worker, ``run``, the dashboard) lives."""
    if url and redact(url) != url:
        logging.getLogger("taskfan.cli").warning(
            "the Redis URL given with %s holds a password, which every user of this "
            "machine can read while this command runs (ps, /proc): set TASKFAN_REDIS_URL "
            "in the environment instead",
            option,
        )


def log_options(default_level: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--log-level`` and ``--log-format`` for a command, which configure logging
    before it runs. Put it under ``@click.command()``."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @click.option(
            "--log-format",
            type=click.Choice(FORMATS),
            default="text",
            show_default=True,
            envvar="TASKFAN_LOG_FORMAT",
            help="Log lines as text or as JSON objects [env: TASKFAN_LOG_FORMAT]",
        )
        @click.option(
            "--log-level",
            type=click.Choice(LEVELS, case_sensitive=False),
            default=default_level,
            show_default=True,
            envvar="TASKFAN_LOG_LEVEL",
            help="Least severe log lines shown [env: TASKFAN_LOG_LEVEL]",
        )
        @functools.wraps(command)
        def wrapper(*args: Any, log_level: str, log_format: str, **kwargs: Any) -> Any:
            configure_logging(log_level, log_format)
            # kept for a command that starts other taskfan commands (``run``)
            click.get_current_context().meta[LOGGING_META] = (log_level, log_format)
            return command(*args, **kwargs)

        return wrapper

    return decorate


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="taskfan")
def main() -> None:
    """taskfan: spread CPU-bound Python work across machines through Redis.

    \b
    Start a worker node:   taskfan worker --redis-url redis://host:6379/0
    Run a job end to end:  taskfan run mod:fn --input items.jsonl
    """


def run(args: Any = None) -> None:  # pragma: no cover - console entry convenience
    main(args)
