"""``taskfan cancel``, ``retry`` and ``purge``: stop work, or run failures again."""

from __future__ import annotations

import click

from producer.ops.admin import purge as purge_queue
from producer.ops.cli import attach, load_settings, open_client
from producer.ops.cli_options import (
    allow_pickle_option,
    cli_errors,
    confirm,
    interruptible,
    redis_option,
    secret_option,
)
from taskfan.cli import log_options


@click.command()
@click.argument("job_ids", metavar="JOB...", nargs=-1, required=True)
@click.option(
    "--terminate",
    is_flag=True,
    help="Also kill the pool processes running the jobs' items (a hard cancel)",
)
@redis_option
@log_options("WARNING")
def cancel(job_ids: tuple[str, ...], terminate: bool, redis_url: str | None) -> None:
    """Cancel jobs: their queued batches are skipped, waiters exit 4.

    Items already running finish, but their results are not recorded; with
    --terminate, nodes kill the processes running them at their next heartbeat
    (other jobs' items in those processes run again). A job that already ended
    is left as it is (--terminate still stops what runs of a cancelled job).

    \b
    Example:
      taskfan cancel "$JOB"
    """
    with cli_errors():
        client = open_client(load_settings(redis_url))
        for job_id in job_ids:
            job = attach(client, job_id)
            if job.cancel(terminate=terminate):
                click.echo(f"job {job_id}: cancelled", err=True)
            else:
                click.echo(f"job {job_id}: already {job.status}, left as it is", err=True)


@click.command()
@click.argument("job_id", metavar="JOB")
@allow_pickle_option
@secret_option
@redis_option
@log_options("WARNING")
def retry(job_id: str, allow_pickle: bool, secret_file: str | None, redis_url: str | None) -> None:
    """Run the failed items of a finished JOB again, in place.

    Their new outcomes replace the failures; `taskfan wait JOB` then waits for
    them and `taskfan results JOB` shows the merged outcomes. A pickle job's
    failures are read only with --allow-pickle.

    \b
    Example:
      taskfan retry "$JOB" && taskfan wait "$JOB" --progress
    """
    with cli_errors():
        settings = load_settings(redis_url, secret_file=secret_file)
        client = open_client(settings, allow_pickle=allow_pickle)
        job = attach(client, job_id)
        count = job.retry_failed()
        click.echo(f"job {job_id}: {count} failed items queued again", err=True)


@click.command()
@click.argument("queue")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation")
@redis_option
@log_options("WARNING")
@interruptible
def purge(queue: str, yes: bool, redis_url: str | None) -> None:
    """Drop every batch waiting on QUEUE and cancel the queue's active jobs.

    Finished jobs and their results are kept; worker nodes carry on.

    \b
    Example:
      taskfan purge default --yes
    """
    with cli_errors():
        client = open_client(load_settings(redis_url))
        if not yes:
            confirm(f"Drop every batch of queue {queue!r} and cancel its jobs?")
        purged = purge_queue(client.redis, queue)
        click.echo(
            f"queue {purged.queue}: dropped {purged.entries} batches, "
            f"cancelled {purged.jobs_cancelled} jobs",
            err=True,
        )
