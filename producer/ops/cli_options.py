"""The CLI's shared parts: exit codes, error handling, and option groups.

Exit codes (every command of ``producer.ops.cli``, ``producer.ops.status`` and
``producer.ops.run``): 0 every item succeeded, 1 some items failed, 2 an error (bad
usage or input, unusable settings, Redis unreachable, job not found), 3 timed
out, 4 the job was cancelled or abandoned, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click

from producer.ops import inputs
from taskfan.cli import (  # noqa: F401 - the exit codes are re-exported for producer's commands
    BYTE_SIZE,
    EXIT_CANCELLED,
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    CliError,
)
from taskfan.errors import JobCancelled, TaskfanError


class Cancelled(click.ClickException):
    exit_code = EXIT_CANCELLED


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn our errors into one clear line and an exit code, never a traceback."""
    try:
        yield
    except JobCancelled as exc:
        raise Cancelled(str(exc)) from None
    except TaskfanError as exc:
        raise CliError(str(exc)) from None


def confirm(question: str) -> None:
    """Ask ``question`` on stderr; raise CliError (exit 2) unless the answer is
    yes. With no standard input (a script, CI) it says to pass ``--yes``
    instead of click's "Aborted!" and exit 1, which reads as "items failed"."""
    click.echo(f"{question} [y/N]: ", nl=False, err=True)
    answer = sys.stdin.readline()
    if not answer:
        raise CliError("no answer (standard input is closed): pass --yes to go ahead unasked")
    if answer.strip().lower() not in ("y", "yes"):
        raise CliError("not confirmed: nothing changed")


def interruptible(command: Callable[..., None]) -> Callable[..., None]:
    """Ctrl-C: exit 130 with one line (click would say "Aborted!" and exit 1,
    which reads as "some items failed")."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper


def _options(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def apply(fn: Any) -> Any:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


allow_pickle_option = click.option(
    "--allow-pickle",
    is_flag=True,
    help="Read results of jobs enqueued with the pickle codec (unpickling runs code: "
    "only from a Redis you trust)",
)

redis_option = click.option(
    "--redis-url",
    help="Redis URL: redis[s]://, redis[s]+cluster://, redis[s]+sentinel:// "
    "(docs/scaling.md) [env: TASKFAN_REDIS_URL]",
)

_input_options = _options(
    click.option(
        "--input",
        "-i",
        "input_path",
        required=True,
        help="File of inputs, one item per line or row; '-' reads stdin; .gz is decompressed",
    ),
    click.option(
        "--format",
        "fmt",
        type=click.Choice(inputs.FORMATS),
        help="Input format (default: from the extension: .csv, .txt/.lines; else jsonl)",
    ),
    click.option(
        "--star",
        is_flag=True,
        help="jsonl: call fn(*item) for an array, fn(**item) for an object",
    ),
    click.option(
        "--csv-types",
        type=click.Choice(inputs.CSV_TYPES),
        default="str",
        show_default=True,
        help="csv: 'auto' reads numbers, true/false and empty cells (None); 'str' keeps text",
    ),
    click.option(
        "--skip-invalid",
        is_flag=True,
        help="Record malformed lines as failed items (type InvalidInput) instead of stopping",
    ),
)


@dataclass(frozen=True)
class InputFile:
    """The input options of a command: where its items come from, and how to read them."""

    path: str  #: a file, or inputs.STDIN
    fmt: str | None  #: None: from the file's extension
    star: bool
    csv_types: str
    skip_invalid: bool


def input_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--input``, ``--format``, ``--star``, ``--csv-types`` and ``--skip-invalid``,
    given to the command as one argument ``source`` (an InputFile)."""

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        input_path: str,
        fmt: str | None,
        star: bool,
        csv_types: str,
        skip_invalid: bool,
        **kwargs: Any,
    ) -> Any:
        source = InputFile(input_path, fmt, star, csv_types, skip_invalid)
        return command(*args, source=source, **kwargs)

    return _input_options(wrapper)


job_options = _options(
    click.option("--queue", "-q", help="Queue to enqueue on [env: TASKFAN_QUEUE]"),
    click.option(
        "--batch-size",
        type=int,
        help="Items per Redis entry (default: automatic) [env: TASKFAN_BATCH_SIZE]",
    ),
    click.option(
        "--chunksize",
        type=int,
        help="Items per pool message on a node (default: measured) [env: TASKFAN_CHUNKSIZE]",
    ),
    click.option(
        "--result-ttl",
        type=int,
        help="Seconds results are kept after the job ends; 0 keeps them "
        "(default: 7 days) [env: TASKFAN_RESULT_TTL]",
    ),
)

output_options = _options(
    click.option(
        "--output",
        "-o",
        default="-",
        show_default=True,
        help="Where outcomes go, as JSONL; '-' is stdout",
    ),
    click.option(
        "--progress/--no-progress",
        default=None,
        help="Progress on stderr (default: when stderr is a terminal)",
    ),
)

secret_option = click.option(
    "--secret-file",
    type=click.Path(dir_okay=False),
    help="File of shared secrets, one per line: sign batches with the first, accept "
    "results signed with any [env: TASKFAN_SECRET_FILE, or the secret in TASKFAN_SECRET]",
)

limit_options = _options(
    click.option(
        "--max-item-bytes",
        type=BYTE_SIZE,
        help="Largest encoded item, e.g. 16M (default 16 MiB) [env: TASKFAN_MAX_ITEM_BYTES]",
    ),
    click.option(
        "--max-batch-bytes",
        type=BYTE_SIZE,
        help="Largest encoded batch, e.g. 64M (default 64 MiB) [env: TASKFAN_MAX_BATCH_BYTES]",
    ),
)
