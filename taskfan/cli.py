"""The ``taskfan`` command line: the root group.

Each command lives with the role it serves (``worker.cli``, ``producer.cli``) and
is imported only when it runs, so ``taskfan --help`` stays fast and the roles
never import each other.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from taskfan import __version__

#: command name -> "module:attribute" of its click command
COMMANDS: dict[str, str] = {
    "worker": "worker.cli:worker",
    "enqueue": "producer.cli:enqueue",
    "wait": "producer.cli:wait",
    "results": "producer.cli:results",
    "status": "producer.status:status",
    "run": "producer.run:run",
    "cancel": "producer.cli_admin:cancel",
    "retry": "producer.cli_admin:retry",
    "purge": "producer.cli_admin:purge",
}


class LazyGroup(click.Group):
    """A group whose commands are imported when first used."""

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


def configure_logging(level: str, fmt: str = "text") -> None:
    """Set up logging for a command; libraries never do this themselves."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


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
