"""``taskfan nodes``, ``jobs`` and ``inspect``: the node registry, job lists, one job."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click

from producer.ops import deadletters, overview, peek
from producer.ops.cli import attach, load_settings, open_client
from producer.ops.cli_options import cli_errors, redis_option
from producer.ops.skipped import Skipped, describe, queue_name
from producer.ops.status import age, batches_text, rate, render_jobs, render_nodes, table, when
from taskfan.cli import LIMIT, log_options
from taskfan.connection import RedisClient, translate_errors
from taskfan.keys import JobKeys
from taskfan.meta import JobMeta
from taskfan.options import DEFAULT_OPTIONS


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table")
@redis_option
@log_options("WARNING")
def nodes(as_json: bool, redis_url: str | None) -> None:
    """List live worker nodes: what each runs and has done.

    A node publishes its record every heartbeat; one that stops beating (killed,
    cut off, stopped) drops out three heartbeats later.

    \b
    Examples:
      taskfan nodes
      taskfan nodes --json | jq '.[] | {id, rate, jobs}'
    """
    skipped: list[Skipped] = []
    with cli_errors():
        r = open_client(load_settings(redis_url)).redis
        with translate_errors("reading the node registry"):
            now = overview.server_time(r)
            live = overview.nodes(r, now, skipped)
    warn(skipped)
    if as_json:
        click.echo(json.dumps(live, indent=2))
        return
    click.echo("\n".join(render_nodes(live, now)))
    busy = [n for n in live if n["jobs"]]
    if busy:
        click.echo("working on")
        rows = [["NODE", "JOBS"], *[[n["id"], " ".join(n["jobs"])] for n in busy]]
        click.echo("\n".join(table(rows)))


@click.command()
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(overview.STATES),
    help="Only jobs in this state; repeat for several (failed: finished with failed items)",
)
@click.option("--queue", "-q", "queues", multiple=True, help="Only this queue; repeat for several")
@click.option(
    "--limit", type=LIMIT, default=50, show_default=True, help="Jobs listed, newest first"
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table")
@redis_option
@log_options("WARNING")
def jobs(
    states: tuple[str, ...],
    queues: tuple[str, ...],
    limit: int,
    as_json: bool,
    redis_url: str | None,
) -> None:
    """List jobs, newest first: status, progress, counts, rate, ETA.

    \b
    Examples:
      taskfan jobs
      taskfan jobs --state running --state queued
      taskfan jobs --state failed --json
    """
    skipped: list[Skipped] = []
    with cli_errors():
        r = open_client(load_settings(redis_url)).redis
        with translate_errors("listing jobs"):
            names = list(queues) or overview.queue_names(r, skipped)
            rows = overview.jobs(r, names, limit, states, skipped=skipped)
            now = overview.server_time(r)
    warn(skipped)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo("\n".join(render_jobs(rows, now)))


def warn(skipped: list[Skipped]) -> None:
    """Name the records a listing passed over, on stderr (stdout keeps its format)."""
    for line in describe([s.as_dict() for s in skipped]):
        click.echo(line.strip(), err=True)


def inspect_data(r: RedisClient, meta: JobMeta, failures: int) -> dict[str, Any]:
    now = overview.server_time(r)
    events: Any = r.xrevrange(JobKeys(meta.id).events, count=overview.RATE_EVENTS)
    options = meta.options
    skipped: list[Skipped] = []
    found = list(peek.failures(r, meta, failures, skipped))
    holding = [n["id"] for n in overview.nodes(r, now, skipped) if meta.id in n["jobs"]]
    dead = []  # a meta naming a queue that cannot be one has no dead letters to read
    if queue_name(meta.queue, skipped) is not None:
        dead = deadletters.list_dead(r, meta.queue, limit=20, job_id=meta.id)
    return {
        **overview.job_status(meta, now, events),
        "codec": meta.codec,
        "mode": meta.mode.value,
        "ok": meta.ok,
        "batch_size": meta.batch_size,  # 0: automatic, ramp_max then says up to what
        "ramp_max": meta.ramp_max or None,
        "chunksize": meta.chunksize or "auto",
        "result_ttl": meta.result_ttl,
        "retry_rounds": meta.rounds,
        "initializer": meta.initializer or None,  # its arguments are not decoded here
        "options": {
            "timeout": options.timeout,
            "hard_timeout": options.hard_timeout,
            "retries": options.retries,
            "retry_on": list(options.retry_on),
            "backoff": options.backoff,
            "backoff_max": options.backoff_max,
        },
        "nodes": holding,
        "dead_letters": [d.as_dict() for d in dead],
        "failures": [
            {"index": o.index, "attempts": o.attempts, **(o.error.as_dict() if o.error else {})}
            for o in found
        ],
        "skipped": [s.as_dict() for s in skipped],
    }


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def batch_size_text(data: dict[str, Any]) -> str:
    """``50 items``, or for automatic sizes the ramp and what it came to."""
    if data["batch_size"]:
        return f"{data['batch_size']} items"
    text = "automatic: 1, 2, 4, ..."
    if data["ramp_max"]:
        text += f" up to {data['ramp_max']} items"
    if data["total"] and data["batches"]:
        text += f"; {data['total'] / data['batches']:.4g} items a batch on average"
    return text


def render_inspect(data: dict[str, Any]) -> str:
    total = data["total"]
    eta = data["eta_seconds"]
    defaults = dataclasses.asdict(DEFAULT_OPTIONS)
    defaults["retry_on"] = list(defaults["retry_on"])
    options = ", ".join(f"{k}={v}" for k, v in data["options"].items() if v != defaults[k])
    rows = [
        ["job", data["id"]],
        ["function", data["function"]],
        ["queue", data["queue"]],
        ["status", data["status"]],
        ["items", f"{data['done']}/{total if total is not None else '?'} done: "
                  f"{data['ok']} ok, {data['failed']} failed"],
        ["batches", batches_text(data) + f", {plural(data['retry_rounds'], 'retry round')}"],
        ["rate", rate(data["rate"]) + (f", ETA {age(eta)}" if eta is not None else "")],
        ["created", when(data["created_at"])],
        ["finished", when(data["finished_at"]) + f" (after {age(data['seconds'])})"
                     if data["finished_at"] else "-"],
        ["codec, mode", f"{data['codec']}, {data['mode']}"],
        ["batch size", batch_size_text(data)],
        ["chunksize", data["chunksize"]],
        ["result ttl", f"{data['result_ttl']}s" if data["result_ttl"] else "kept"],
        ["options", options or "defaults"],
        ["initializer", data.get("initializer") or "-"],
        ["nodes on it", ", ".join(data["nodes"]) or "-"],
    ]  # fmt: skip
    lines = table(rows)
    if data["dead_letters"]:
        lines.append("dead letters")
        lines += [f"  {d['id']}: batch {d['batch']}: {d['reason']}" for d in data["dead_letters"]]
    failures = data["failures"]
    if failures:
        lines.append(f"first {len(failures)} failures")
        for f in failures:
            lines.append(f"  item {f['index']} ({f['attempts']} attempts): {f['type']}: "
                         f"{f['message']}")  # fmt: skip
            lines += ["    " + line for line in f["traceback"].rstrip().splitlines()]
    lines += describe(data["skipped"])
    return "\n".join(lines)


@click.command()
@click.argument("job_id", metavar="JOB")
@click.option("--failures", default=5, show_default=True, help="Failed items shown, first first")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@redis_option
@log_options("WARNING")
def inspect(job_id: str, failures: int, as_json: bool, redis_url: str | None) -> None:
    """Show one job: its options, counters, rate, the nodes on it, its dead
    letters, and its first failures with their tracebacks.

    Failures are read without unpickling anything from Redis (values and
    exception objects of pickle jobs are not rebuilt; their text is shown).

    \b
    Example:
      taskfan inspect "$JOB" --failures 10
    """
    with cli_errors():
        client = open_client(load_settings(redis_url))
        meta = attach(client, job_id).meta()
        with translate_errors(f"inspecting job {job_id}"):
            data = inspect_data(client.redis, meta, failures)
    click.echo(json.dumps(data, indent=2) if as_json else render_inspect(data))
