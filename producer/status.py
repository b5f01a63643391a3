"""``taskfan status``: queues, jobs and worker nodes at a glance.

Read-only, except that job ids whose meta hash is gone (expired after their
result TTL, or purged) are pruned from their queue's ``jobs`` index.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
import redis

from producer.cli import attach, load_settings, open_client
from producer.cli_options import cli_errors, interruptible, redis_option
from taskfan import keys
from taskfan.cli import log_options
from taskfan.connection import translate_errors
from taskfan.keys import GROUP, JobKeys, QueueKeys
from taskfan.protocol import JobMeta


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def queue_status(r: redis.Redis, name: str) -> dict[str, Any]:
    """Batches waiting and in flight (delivered, not yet acknowledged), consumers, dead."""
    queue = QueueKeys(name)
    pipe = r.pipeline(transaction=False)
    pipe.xlen(queue.stream)
    pipe.xinfo_groups(queue.stream)
    pipe.xlen(queue.dead)
    pipe.zcard(queue.jobs)
    length, groups, dead, jobs = pipe.execute(raise_on_error=False)
    group: dict[Any, Any] = {}
    if isinstance(groups, list):  # an error when the stream does not exist yet
        group = next((g for g in groups if _text(g.get("name")) == GROUP), {})
    in_flight = int(group.get("pending", 0))  # the XPENDING summary's count
    length = length if isinstance(length, int) else 0
    return {
        "name": name,
        "length": length,
        "waiting": max(0, length - in_flight),
        "in_flight": in_flight,
        "consumers": int(group.get("consumers", 0)),
        "dead": dead if isinstance(dead, int) else 0,
        "jobs": jobs if isinstance(jobs, int) else 0,
    }


def job_status(meta: JobMeta, now: float) -> dict[str, Any]:
    end = meta.finished_at or now
    return {
        "id": meta.id,
        "queue": meta.queue,
        "function": meta.fn_ref,
        "status": meta.status,
        "done": meta.done,
        "failed": meta.failed,
        "total": meta.total if meta.sealed else None,
        "batches_done": meta.batches_done,
        "batches": meta.batches if meta.sealed else None,
        "created_at": meta.created_at,
        "finished_at": meta.finished_at,
        "seconds": round(end - meta.created_at, 3),
    }


def recent_jobs(r: redis.Redis, queue: str, limit: int) -> list[JobMeta]:
    """The queue's newest jobs; ids whose meta is gone are pruned from the index."""
    index = QueueKeys(queue).jobs
    ids = [_text(i) for i in r.zrevrange(index, 0, limit - 1)]
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hgetall(JobKeys(job_id).meta)
    metas, gone = [], []
    for job_id, raw in zip(ids, pipe.execute(), strict=True):
        if raw:
            metas.append(JobMeta.parse(job_id, raw))
        else:
            gone.append(job_id)
    if gone:
        r.zrem(index, *gone)
    return metas


def node_status(r: redis.Redis, now: float) -> list[dict[str, Any]]:
    """Every node in the nodes index; alive while its record has not expired."""
    entries: Any = r.zrevrange(keys.NODES, 0, -1, withscores=True)
    pipe = r.pipeline(transaction=False)
    for node_id, _ in entries:
        pipe.hgetall(keys.node(_text(node_id)))
    out = []
    for (node_id, beat), raw in zip(entries, pipe.execute(), strict=True):
        record = {_text(k): _text(v) for k, v in raw.items()}
        out.append(
            {
                "id": _text(node_id),
                "alive": bool(record),
                "host": record.get("host"),
                "pid": int(record["pid"]) if "pid" in record else None,
                "processes": int(record["processes"]) if "processes" in record else None,
                "queues": record.get("queues"),
                "last_heartbeat": beat,
                "seconds_since_heartbeat": round(now - beat, 1),
                "items_done": int(record.get("items_done", 0)),
                "items_failed": int(record.get("items_failed", 0)),
            }
        )
    return out


def gather(r: redis.Redis, limit: int) -> dict[str, Any]:
    now = time.time()
    queues = sorted(_text(q) for q in r.smembers(keys.QUEUES))
    jobs = [job_status(m, now) for q in queues for m in recent_jobs(r, q, limit)]
    return {
        "queues": [queue_status(r, q) for q in queues],
        "jobs": jobs,
        "nodes": node_status(r, now),
    }


def _table(rows: list[list[Any]]) -> list[str]:
    texts = [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in texts) for i in range(len(texts[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in texts
    ]


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def render(status: dict[str, Any]) -> str:
    lines = ["queues"]
    queue_rows = [["NAME", "WAITING", "IN FLIGHT", "CONSUMERS", "DEAD", "JOBS"]]
    for q in status["queues"]:
        queue_rows.append(
            [q["name"], q["waiting"], q["in_flight"], q["consumers"], q["dead"], q["jobs"]]
        )
    lines += _table(queue_rows) if status["queues"] else ["  (none)"]
    lines.append("jobs (newest first)")
    job_rows = [["ID", "QUEUE", "STATUS", "DONE", "FAILED", "TOTAL", "AGE", "FUNCTION"]]
    now = time.time()
    for j in status["jobs"]:
        job_rows.append(
            [j["id"], j["queue"], j["status"], j["done"], j["failed"], j["total"],
             _age(now - j["created_at"]), j["function"]]
        )  # fmt: skip
    lines += _table(job_rows) if status["jobs"] else ["  (none)"]
    lines.append("nodes")
    node_rows = [["ID", "ALIVE", "PROCESSES", "HEARTBEAT", "QUEUES", "DONE", "FAILED"]]
    for n in status["nodes"]:
        node_rows.append(
            [n["id"], "yes" if n["alive"] else "no", n["processes"],
             _age(n["seconds_since_heartbeat"]) + " ago", n["queues"], n["items_done"],
             n["items_failed"]]
        )  # fmt: skip
    lines += _table(node_rows) if status["nodes"] else ["  (none)"]
    return "\n".join(lines)


def render_job(job: dict[str, Any]) -> str:
    rows = [[name, value] for name, value in job.items()]
    return "\n".join(_table(rows))


@click.command()
@click.argument("job_id", metavar="[JOB]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables")
@click.option("--limit", default=20, show_default=True, help="Jobs shown per queue, newest first")
@redis_option
@log_options("WARNING")
@interruptible
def status(job_id: str | None, as_json: bool, limit: int, redis_url: str | None) -> None:
    """Show queues, recent jobs and worker nodes; or one JOB.

    \b
    Queues: batches waiting, in flight (delivered to a node, not yet recorded),
    consumers, dead letters. Jobs: status, items done and failed. Nodes: alive
    (its record expires 3 heartbeats after it stops), processes, last heartbeat.

    \b
    Examples:
      taskfan status
      taskfan status "$JOB" --json
    """
    with cli_errors():
        client = open_client(load_settings(redis_url))
        r = client.redis
        with translate_errors("reading the status"):
            if job_id is None:
                data = gather(r, limit)
                text = render(data)
            else:
                data = job_status(attach(client, job_id).meta(), time.time())
                text = render_job(data)
    click.echo(json.dumps(data, indent=2) if as_json else text)
    sys.exit(0)
