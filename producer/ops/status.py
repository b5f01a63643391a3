"""``taskfan status``: queues, jobs and worker nodes at a glance, once or live.

The data comes from ``producer.ops.overview`` (read-only, but for pruning expired
job ids and dead nodes from their indexes); this module draws it as tables.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from producer.listeners import nobody_serves, serving
from producer.ops import overview
from producer.ops.cli import attach, load_settings, open_client
from producer.ops.cli_options import cli_errors, interruptible, redis_option
from producer.ops.skipped import describe
from taskfan.cli import LIMIT, log_options
from taskfan.connection import RedisClient, translate_errors
from taskfan.errors import TaskfanError

#: a terminal's "clear the screen and go home"
CLEAR = "\x1b[H\x1b[2J"


def table(rows: list[list[Any]]) -> list[str]:
    texts = [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in texts) for i in range(len(texts[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in texts
    ]


def age(seconds: float | None) -> str:
    """3s, 4m, 2.5h, 3.0d: how long, in the unit that reads best."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def bar(progress: float | None, width: int = 10) -> str:
    """[#####.....] 50%"""
    if progress is None:
        return "-"
    filled = int(min(max(progress, 0.0), 1.0) * width)  # more done than total: full
    return f"[{'#' * filled}{'.' * (width - filled)}] {progress * 100:3.0f}%"


def rate(value: float | None) -> str:
    if not value:
        return "-"
    return f"{value:.1f}/s" if value < 100 else f"{value:.0f}/s"


def render_queues(queues: list[dict[str, Any]]) -> list[str]:
    rows = [["NAME", "WAITING", "IN FLIGHT", "DEAD", "CONSUMERS", "JOBS"]]
    for q in queues:
        rows.append([q["name"], q["waiting"], q["in_flight"], q["dead"], q["consumers"], q["jobs"]])
    return table(rows) if queues else ["  (none)"]


def render_jobs(jobs: list[dict[str, Any]], now: float) -> list[str]:
    rows = [["ID", "QUEUE", "STATUS", "PROGRESS", "DONE", "FAILED", "TOTAL", "RATE", "ETA",
             "AGE", "FUNCTION"]]  # fmt: skip
    for j in jobs:
        eta = j["eta_seconds"]
        rows.append(
            [j["id"], j["queue"], j["status"], bar(j["progress"]), j["done"], j["failed"],
             j["total"], rate(j["rate"]), age(eta) if eta is not None else "-",
             age(now - j["created_at"]), j["function"]]
        )  # fmt: skip
    return table(rows) if jobs else ["  (none)"]


def served(node: dict[str, Any]) -> str:
    """The queues a node serves; RQ queues as ``rq:NAME``."""
    return ",".join([*node["queues"], *(f"rq:{name}" for name in node.get("rq_queues", []))])


def render_nodes(nodes: list[dict[str, Any]], now: float) -> list[str]:
    rows = [["ID", "HOST", "PROCESSES", "BUSY", "IN FLIGHT", "RATE", "OK", "FAILED",
             "RESTARTS", "HEARTBEAT", "UP", "ACCEPTS", "QUEUES"]]  # fmt: skip
    for n in nodes:
        up = now - n["started_at"] if n["started_at"] else None
        rows.append(
            [n["id"], n["host"], n["processes"], n["busy"], n["in_flight"], rate(n["rate"]),
             n["items_done"], n["items_failed"], n["pool_restarts"],
             age(n["seconds_since_heartbeat"]) + " ago", age(up), n["accepts"], served(n)]
        )  # fmt: skip
    if not nodes:
        return ["  (none)"]
    # Functions a node cannot import or may not run: it hands their batches to
    # nodes that can (worker.core.unrunnable).
    cannot = [
        f"  {n['id']} cannot run {fn}: {why}"
        for n in nodes
        for fn, why in n.get("cannot_run", {}).items()
    ]
    return table(rows) + cannot


def render(status: dict[str, Any]) -> str:
    now = status["time"]
    lines = [f"warning: {text}" for text in status.get("warnings", [])]
    lines += ["queues", *render_queues(status["queues"])]
    lines += ["jobs (newest first)", *render_jobs(status["jobs"], now)]
    lines += ["nodes", *render_nodes(status["nodes"], now)]
    lines += describe(status.get("skipped", []))
    return "\n".join(lines)


def when(stamp: float | None) -> str:
    """An epoch as this machine's local time, to the second."""
    if stamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(stamp).isoformat(sep=" ", timespec="seconds")


def batches_text(job: dict[str, Any]) -> str:
    """``16/16 recorded (7 of them retries)``: retries and requeued dead letters are
    batches to record too, so they count on both sides."""
    extra = job.get("retry_batches") or 0
    expected = "?" if job["batches"] is None else job["batches"] + extra
    text = f"{job['batches_done']}/{expected} recorded"
    return text + (f" ({extra} of them retries)" if extra else "")


def cancelled_text(job: dict[str, Any]) -> str:
    """ ", N cancelled" for a job cancelled or abandoned with items that have no
    outcome (they read as cancelled), else nothing."""
    return f", {job['cancelled']} cancelled" if job.get("cancelled") else ""


def render_job(job: dict[str, Any], now: float) -> str:
    """One job for people: a bar, items, rate, times; ``--json`` keeps the numbers."""
    total = "?" if job["total"] is None else job["total"]
    eta = job["eta_seconds"]
    finished = job["finished_at"]
    rows = [
        ["job", job["id"]],
        ["function", job["function"]],
        ["queue", job["queue"]],
        ["status", job["status"]],
        ["progress", bar(job["progress"]) if job["progress"] is not None else "-"],
        ["items", f"{job['done']}/{total} done, {job['failed']} failed" + cancelled_text(job)],
        ["rate", rate(job["rate"]) + (f", ETA {age(eta)}" if eta is not None else "")],
        ["batches", batches_text(job)],
        ["created", f"{when(job['created_at'])} ({age(now - job['created_at'])} ago)"],
        ["finished", f"{when(finished)} (after {age(job['seconds'])})" if finished else "-"],
    ]  # fmt: skip
    if job.get("warning"):  # e.g. no live node serves its queue
        rows.append(["warning", job["warning"]])
    return "\n".join(table(rows))


def watch_loop(draw: Callable[[], str], interval: float, mode: str) -> None:
    """Draw every ``interval`` seconds until Ctrl-C (which ends it quietly).

    ``mode``: ``clear`` redraws in place (a terminal), ``text`` prints one snapshot
    after another under a line with the time, ``json`` one JSON object a line.
    A snapshot that cannot be read (Redis unreachable) is shown as the error.
    """
    try:
        while True:
            try:
                frame = draw()
            except TaskfanError as exc:  # Redis away for a moment: say so, keep watching
                frame = json.dumps({"error": str(exc)}) if mode == "json" else f"error: {exc}"
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            if mode == "clear":
                click.echo(f"{CLEAR}taskfan status, every {interval:g}s: {stamp}\n{frame}")
            elif mode == "text":
                click.echo(f"--- {stamp}\n{frame}")
            else:
                click.echo(frame)
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo("", err=True)


def snapshot(r: RedisClient, limit: int, as_json: bool) -> str:
    with translate_errors("reading the status"):
        data = overview.gather(r, limit)
    return json.dumps(data) if as_json else render(data)


@click.command()
@click.argument("job_id", metavar="[JOB]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables")
@click.option(
    "--limit", type=LIMIT, default=20, show_default=True, help="Jobs shown per queue, newest first"
)
@click.option("--watch", "-w", is_flag=True, help="Redraw until Ctrl-C")
@click.option(
    "--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.1),
    help="Seconds between redraws, with --watch",
)  # fmt: skip
@redis_option
@log_options("WARNING")
@interruptible
def status(
    job_id: str | None,
    as_json: bool,
    limit: int,
    watch: bool,
    interval: float,
    redis_url: str | None,
) -> None:
    """Show queues, recent jobs and live worker nodes; or one JOB.

    \b
    Queues: batches waiting, in flight (delivered to a node, not yet recorded),
    dead letters, consumers (live nodes serving it), jobs indexed. Jobs: status,
    progress, items done and failed, rate, ETA. Nodes: processes, busy chunks,
    batches in flight, rate, items done and failed, pool restarts, last heartbeat.

    \b
    Examples:
      taskfan status
      taskfan status --watch
      taskfan status "$JOB" --json
    """
    with cli_errors():
        client = open_client(load_settings(redis_url))
        r = client.redis
        if job_id is not None:
            with translate_errors("reading the status"):
                meta = attach(client, job_id).meta()
                now = overview.server_time(r)
                data = overview.job_status(meta, now)
                if data["status"] in overview.ACTIVE_WORDS and not serving(r, meta.queue):
                    data["warning"] = nobody_serves(meta.queue)
            click.echo(json.dumps(data, indent=2) if as_json else render_job(data, now))
            sys.exit(0)
        if watch:
            mode = "json" if as_json else "clear" if sys.stdout.isatty() else "text"
            watch_loop(lambda: snapshot(r, limit, as_json), interval, mode)
            sys.exit(0)
        if as_json:
            with translate_errors("reading the status"):
                click.echo(json.dumps(overview.gather(r, limit), indent=2))
        else:
            click.echo(snapshot(r, limit, as_json=False))
    sys.exit(0)
