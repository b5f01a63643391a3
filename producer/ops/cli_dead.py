"""``taskfan dead QUEUE``: list dead letters with their reasons; requeue or drop them."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from producer.client import Client
from producer.ops import deadletters
from producer.ops.cli import load_settings, open_client
from producer.ops.cli_options import (
    EXIT_ERROR,
    CliError,
    cli_errors,
    confirm,
    interruptible,
    redis_option,
    secret_option,
)
from producer.ops.deadletters import Requeued
from producer.ops.status import age, table
from taskfan.cli import LIMIT, log_options
from taskfan.errors import TaskfanError
from taskfan.keys import QueueKeys


def _render(letters: list[deadletters.DeadLetter], now: float) -> str:
    rows: list[list[Any]] = [["ID", "AGE", "JOB", "BATCH", "ITEMS", "REASON"]]
    for d in letters:
        rows.append([d.id, age(now - d.at), d.job_id, d.batch, d.items, d.reason])
    return "\n".join(table(rows)) if letters else "  (none)"


def _said(result: Requeued | str) -> tuple[bool, str]:
    if isinstance(result, str):
        return False, result
    how = f"retry round {result.round}" if result.round else "as it was (never recorded)"
    return True, (
        f"dead letter {result.dead_id}: job {result.job_id} batch {result.batch} "
        f"({result.items} items) queued again as entry {result.entry_id}, {how}"
    )


def _check_usage(
    queue: str, dead_ids: tuple[str, ...], requeue: bool, drop: bool, everything: bool
) -> None:
    try:
        QueueKeys(queue)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if requeue and drop:
        raise CliError("choose one of --requeue and --drop")
    if (requeue or drop) and not (dead_ids or everything):
        raise CliError("name the dead letters (IDs) or pass --all")
    if dead_ids and everything:
        raise CliError("give IDs or --all, not both")
    if (dead_ids or everything) and not (requeue or drop):
        raise CliError("with IDs or --all, pass --requeue or --drop")


def _requeue(client: Client, queue: str, dead_ids: tuple[str, ...]) -> int:
    """Requeue these dead letters (none named: every one), saying what became of
    each; the exit code (2 when one could not be requeued)."""
    results: list[Requeued | str] = []
    if not dead_ids:
        results = deadletters.requeue_all(client.redis, queue, client.keyring)
    for dead_id in dead_ids:
        try:
            results.append(deadletters.requeue(client.redis, queue, dead_id, client.keyring))
        except TaskfanError as exc:  # say it, go on with the others
            results.append(str(exc))
    ok = True
    for result in results:
        done, line = _said(result)
        ok = ok and done
        click.echo(line, err=True)
    if not results:
        click.echo(f"queue {queue}: no dead letters", err=True)
    return 0 if ok else EXIT_ERROR


@click.command()
@click.argument("queue")
@click.argument("dead_ids", metavar="[ID...]", nargs=-1)
@click.option("--requeue", is_flag=True, help="Run the given dead letters (or --all) again")
@click.option("--drop", is_flag=True, help="Delete the given dead letters (or --all)")
@click.option("--all", "everything", is_flag=True, help="With --requeue or --drop: every one")
@click.option("--job", "job_id", help="List only the dead letters of this job")
@click.option(
    "--limit", type=LIMIT, default=50, show_default=True, help="Dead letters listed, newest first"
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table")
@click.option("--yes", is_flag=True, help="Do not ask before --drop --all")
@secret_option
@redis_option
@log_options("WARNING")
@interruptible
def dead(
    queue: str,
    dead_ids: tuple[str, ...],
    requeue: bool,
    drop: bool,
    everything: bool,
    job_id: str | None,
    limit: int,
    as_json: bool,
    yes: bool,
    secret_file: str | None,
    redis_url: str | None,
) -> None:
    """List the dead letters of QUEUE (batches delivered too often, or unreadable),
    newest first, with their reasons; or requeue or drop them.

    A requeued batch runs again as a retry round of its job: its items stop
    counting as failed, the job is active until the round is recorded, and the
    new outcomes replace the failures. Dropping keeps the items failed.

    \b
    Examples:
      taskfan dead default
      taskfan dead default 1712345678901-0 --requeue
      taskfan dead default --requeue --all
      taskfan dead default --drop --all --yes
    """
    with cli_errors():
        _check_usage(queue, dead_ids, requeue, drop, everything)
        client = open_client(load_settings(redis_url, secret_file=secret_file))
        r = client.redis
        if drop:
            if everything:
                if not yes:
                    confirm(f"Drop every dead letter of queue {queue!r}?")
                count = deadletters.drop_all(r, queue)
            else:
                count = deadletters.drop(r, queue, dead_ids)
            click.echo(f"queue {queue}: dropped {count} dead letters", err=True)
            return
        if requeue:
            sys.exit(_requeue(client, queue, dead_ids))
        letters = deadletters.list_dead(r, queue, limit, job_id)
    if as_json:
        click.echo(json.dumps([d.as_dict() for d in letters], indent=2))
    else:
        click.echo(_render(letters, time.time()))
