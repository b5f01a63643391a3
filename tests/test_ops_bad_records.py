"""Operator views over hostile records written straight into Redis: ``taskfan
status``, ``jobs``, ``nodes``, ``inspect`` and the dashboard's ``/api/overview``
skip each bad queue name, job id, meta hash, node record and result entry, name
it, and still show the rest; a meta that claims 10**15 batches costs a view
what Redis holds, not what the meta claims."""

from __future__ import annotations

import json
import pickle
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from producer import Client
from producer.ops import overview, peek
from producer.ops.dashboard import Dashboard, DashboardServer
from taskfan import keys, scripts
from taskfan.keys import JobKeys, QueueKeys
from taskfan.meta import JobMeta
from taskfan.outcomes import encode_result
from tests import tasks
from tests.cli_support import clean_env, invoke, run_taskfan

pytestmark = pytest.mark.usefixtures("clean_env")
__all__ = ["clean_env"]

#: names of the bad records, as the views show them
BAD_QUEUES = ["bad\\xff", "a:b"]
BAD_JOBS = [
    "\\xfe\\xffjob", "x{y}", "notanumber", "fieldless", "badoptions", "hugecount", "negative",
    "longago",
]  # fmt: skip
#: jobs whose meta is odd but within bounds: shown
SHOWN_JOBS = ["vast", "maxed"]
BAD_NODES = ["\\xffnode", "infbeat"]


def record(r: redis.Redis, job_id: str, index: int, values: list[Any], errors: list[Any]) -> None:
    """Record batch ``index`` of a pickle job as a node would."""
    blob = pickle.dumps([values, errors, []], protocol=5)
    entry = encode_result(index * len(values), len(values), len(errors), [blob])
    ok = len(values) - len(errors)
    scripts.record_batch(r, JobKeys(job_id), index, entry, ok, len(errors), 0.0)


def good_job(r: redis.Redis) -> str:
    """A job of 4 batches of 5 on queue "good", 2 recorded (item 7 failed), and
    batch 3's entry garbage."""
    job = Client(r, queue="good").map(tasks.square, range(20), batch_size=5)
    record(r, job.id, 0, [x * x for x in range(5)], [])
    tb = "Traceback (most recent call last):\n  ..."
    record(r, job.id, 1, [25, 36, None, 64, 81], [[2, "ValueError", "bad 7", tb, None, 7]])
    r.hset(JobKeys(job.id).results, "3", b"\x00 not a result entry")
    return job.id


def plant(r: redis.Redis, good_id: str) -> dict[str, str]:
    """Hostile records beside a good job and a good node; returns ids of note."""
    r.sadd(keys.QUEUES, b"bad\xff", "a:b")
    meta: dict[bytes, bytes] = r.hgetall(JobKeys(good_id).meta)  # type: ignore[assignment]
    index = QueueKeys("good").jobs
    now = time.time()
    bad_ids: dict[Any, float] = {b"\xfe\xffjob": now + 1, "x{y}": now + 1}
    r.zadd(index, bad_ids)
    bad_metas = {
        "notanumber": {**meta, b"total": b"lots"},
        "fieldless": {b"queue": b"good"},
        "badoptions": {**meta, b"options": b"[[[["},
        "hugecount": {**meta, b"ok": b"9" * 30},
        "negative": {**meta, b"failed": b"-1"},
        "longago": {**meta, b"created_at": b"-1e11"},
    }
    for job_id, fields in bad_metas.items():
        r.hset(JobKeys(job_id).meta, mapping=fields)  # type: ignore[arg-type]
        r.zadd(index, {job_id: now + 1})
    # A job that claims 10**15 batches and a failure: reading its failures must
    # not walk the batches it claims.
    vast = {**meta, b"batches": b"1" + b"0" * 15, b"failed": b"1", b"sealed": b"1"}
    r.hset(JobKeys("vast").meta, mapping=vast)  # type: ignore[arg-type]
    r.zadd(index, {"vast": now + 2})
    # Counters at their largest, more done than the total, times at their bounds.
    most = str(2**63 - 1).encode()
    maxed = {**meta, b"ok": most, b"failed": most, b"total": b"1", b"batches_done": most,
             b"created_at": b"0", b"finished_at": b"1e11", b"state": b"finished"}  # fmt: skip
    r.hset(JobKeys("maxed").meta, mapping=maxed)  # type: ignore[arg-type]
    r.zadd(index, {"maxed": now + 2})
    r.hset(keys.node("goodnode"), mapping={"host": "h", "queues": '["good"]', "pid": "7"})
    r.hset(keys.node("deepnode"), mapping={"queues": "[" * 100_000, "rate": "nan",
                                           "started_at": "1e400", "pid": "9" * 5000})  # fmt: skip
    r.hset(keys.node("infbeat"), mapping={"host": "h"})
    beats: dict[Any, Any] = {"goodnode": now, "deepnode": now, b"\xffnode": now, "infbeat": "inf"}
    r.zadd(keys.NODES, beats)
    r.xadd(QueueKeys("good").dead, {"reason": "planted", "at": "nan", "j": good_id, "b": "2"})
    return {"good": good_id, "vast": "vast"}


@pytest.fixture
def planted(r: redis.Redis) -> dict[str, str]:
    return plant(r, good_job(r))


def strict_json(text: str) -> Any:
    """JSON as a browser reads it: no NaN or Infinity."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} in JSON")

    return json.loads(text, parse_constant=refuse)


def names_all(text: str, names: list[str]) -> None:
    for name in names:
        assert name in text, f"{name!r} not named in:\n{text}"


def test_status_skips_and_names_bad_records_and_shows_the_rest(
    redis_url: str, planted: dict[str, str]
) -> None:
    shown = invoke("status", "--redis-url", redis_url)
    assert shown.exit_code == 0, shown.output
    out = shown.stdout
    assert planted["good"] in out and "goodnode" in out and "deepnode" in out
    assert "skipped 12 unreadable records" in out
    names_all(out, BAD_QUEUES + BAD_JOBS + BAD_NODES)
    assert "job notanumber: meta: field 'total' is not a number" in out
    assert "job hugecount: meta: field 'ok' is out of range" in out

    data = strict_json(invoke("status", "--json", "--redis-url", redis_url).stdout)
    skipped = {(s["kind"], s["name"]) for s in data["skipped"]}
    assert {("queue", q) for q in BAD_QUEUES} <= skipped
    assert {("job", j) for j in BAD_JOBS} <= skipped
    assert ("node", "infbeat") in skipped
    assert [q["name"] for q in data["queues"]] == ["good"]
    assert {j["id"] for j in data["jobs"]} == {planted["good"], *SHOWN_JOBS}
    deep = next(n for n in data["nodes"] if n["id"] == "deepnode")
    assert (deep["rate"], deep["started_at"], deep["pid"]) == (0.0, None, 0)
    assert deep["queues"] == ["[" * 80 + "..."]


def test_jobs_and_nodes_name_what_they_skip_on_stderr(
    redis_url: str, planted: dict[str, str]
) -> None:
    jobs = invoke("jobs", "--redis-url", redis_url)
    assert jobs.exit_code == 0, jobs.output
    assert planted["good"] in jobs.stdout and "vast" in jobs.stdout
    assert "maxed             good   finished  [##########]" in jobs.stdout
    names_all(jobs.stderr, BAD_QUEUES + BAD_JOBS)
    rows = strict_json(invoke("jobs", "--json", "--redis-url", redis_url).stdout)
    assert {row["id"] for row in rows} == {planted["good"], *SHOWN_JOBS}
    given = invoke("jobs", "--queue", "a:b", "--queue", "good", "--redis-url", redis_url)
    assert given.exit_code == 0 and "queue a:b: cannot be a name" in given.stderr

    nodes = invoke("nodes", "--redis-url", redis_url)
    assert nodes.exit_code == 0, nodes.output
    assert "goodnode" in nodes.stdout and "deepnode" in nodes.stdout
    names_all(nodes.stderr, BAD_NODES)
    found = strict_json(invoke("nodes", "--json", "--redis-url", redis_url).stdout)
    assert {n["id"] for n in found} == {"goodnode", "deepnode"}


def test_inspect_names_an_unreadable_batch_and_shows_the_failures_it_can(
    redis_url: str, planted: dict[str, str]
) -> None:
    shown = invoke("inspect", planted["good"], "--redis-url", redis_url)
    assert shown.exit_code == 0, shown.output
    assert "item 7 (1 attempts): ValueError: bad 7" in shown.stdout
    assert f"batch {planted['good']}/3: job {planted['good']} batch 3:" in shown.stdout
    data = strict_json(
        invoke("inspect", planted["good"], "--json", "--redis-url", redis_url).stdout
    )
    assert [f["index"] for f in data["failures"]] == [7]
    assert {s["kind"] for s in data["skipped"]} >= {"batch", "node"}


def test_inspect_of_a_job_whose_meta_names_a_bad_queue_or_does_not_parse(
    r: redis.Redis, redis_url: str, planted: dict[str, str]
) -> None:
    meta: dict[Any, Any] = r.hgetall(JobKeys(planted["good"]).meta)
    r.hset(JobKeys("badqueue").meta, mapping={**meta, b"queue": b"a:b"})
    shown = invoke("inspect", "badqueue", "--redis-url", redis_url)
    assert shown.exit_code == 0, shown.output
    assert "queue a:b: cannot be a name" in shown.stdout
    for command in ("inspect", "status"):
        refused = invoke(command, "notanumber", "--redis-url", redis_url)
        assert refused.exit_code == 2
        assert refused.stderr == "Error: job notanumber meta: field 'total' is not a number\n"
        refused = invoke(command, "longago", "--redis-url", redis_url)
        assert refused.stderr == "Error: job longago meta: field 'created_at' is out of range\n"
        shown = invoke(command, "maxed", "--redis-url", redis_url)
        assert shown.exit_code == 0 and "5138-11-16" in shown.stdout, shown.output


def test_a_meta_claiming_vast_batches_costs_what_redis_holds(
    r: redis.Redis, redis_url: str, planted: dict[str, str]
) -> None:
    done = run_taskfan("inspect", "vast", "--redis-url", redis_url, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "batches      2/1000000000000000 recorded" in done.stdout
    # Its entries are the good job's: copy batch 1 (a failure) to a high index.
    entry: Any = r.hget(JobKeys(planted["good"]).results, "1")
    r.hset(JobKeys("vast").results, mapping={"1": entry, str(10**14): entry})
    raw: Any = r.hgetall(JobKeys("vast").meta)
    start = time.monotonic()
    found = list(peek.failures(r, JobMeta.parse("vast", raw), 5))
    assert time.monotonic() - start < 5
    assert [o.index for o in found] == [7, 7]  # both entries hold items 5 to 9


@pytest.fixture
def board_url(r: redis.Redis) -> Iterator[tuple[str, Dashboard]]:
    board = Dashboard(r, min_interval=0.0)
    server = DashboardServer(("127.0.0.1", 0), board)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", board
    server.shutdown()
    server.server_close()


def fetch(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # the deadline
            return response.status, strict_json(response.read().decode())
    except urllib.error.HTTPError as exc:
        return exc.code, strict_json(exc.read().decode())


def test_the_dashboard_answers_in_time_naming_what_it_skipped(
    board_url: tuple[str, Dashboard], planted: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = board_url
    start = time.monotonic()
    status, data = fetch(f"{url}/api/overview")
    assert status == 200 and time.monotonic() - start < 10
    assert {j["id"] for j in data["jobs"]} == {planted["good"], *SHOWN_JOBS}
    assert [f["index"] for f in data["failures"]] == [7]
    assert data["dead_letters"][0]["at"] == 0.0
    names = {s["name"] for s in data["skipped"]}
    assert set(BAD_QUEUES + BAD_JOBS) <= names and f"{planted['good']}/3" in names

    def explode(*args: Any) -> Any:
        raise RuntimeError("a record nobody foresaw")

    monkeypatch.setattr(overview, "gather", explode)
    status, data = fetch(f"{url}/api/overview")
    assert status == 500 and data == {"error": "RuntimeError: a record nobody foresaw"}
