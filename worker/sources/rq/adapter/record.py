"""Jobs from their start to their outcome, many per script call: started
(``start``, start.lua: the Execution, the started registry, status "started"),
their leases renewed (``refresh``, refresh.lua), and the common outcomes recorded
(``finish``, finish.lua: the Result, the finished or failed registry, status,
TTLs). The outcomes finish.lua leaves to RQ's own code go to ``rq_worker``.
"""

from __future__ import annotations

import json
import zlib
from base64 import b64encode
from collections.abc import Sequence
from typing import Any

import redis
from rq.defaults import DEFAULT_FAILURE_TTL
from rq.utils import current_timestamp

from worker.sources.rq.adapter.clock import now_text, working_seconds
from worker.sources.rq.adapter.jobs import OK, Outcome, RqJob
from worker.sources.rq.adapter.keys import QueueKeys, worker_executions_key, worker_key
from worker.sources.rq.adapter.scripts import FINISH, PRELUDE, REFRESH, SCRIPT_JOBS, START, run

#: start.lua's and refresh.lua's codes, as ``start`` and ``refresh`` return them
_CODES = {"1": 1, "0": 0, "g": -1, "c": -2}


def _pairs(jobs: Sequence[RqJob]) -> str:
    """Jobs as the scripts take them: one JSON array of job id, execution id, ..."""
    return json.dumps([part for job in jobs for part in (job.id, job.execution_id)])


def _codes(reply: bytes) -> list[int]:
    return [_CODES[c] for c in reply.decode()]


def _lease(now: float, lease: int) -> list[Any]:
    """start.lua's and refresh.lua's lease arguments: now (as a float and as RQ's
    text), the lease, and when the started-registry entry and the Execution expire."""
    return [repr(now), now_text(now), lease, int(now) + lease, int(now) + lease + 60]


def _slices(jobs: Sequence[RqJob]) -> list[Sequence[RqJob]]:
    """The jobs cut to at most SCRIPT_JOBS per script call."""
    return [jobs[at : at + SCRIPT_JOBS] for at in range(0, len(jobs), SCRIPT_JOBS)]


def start(
    client: redis.Redis, worker: str, keys: QueueKeys, jobs: Sequence[RqJob], lease: int, now: float
) -> list[int]:
    """Mark jobs started (start.lua); returns a code per job: 1 started, 0 no
    longer dequeued, -1 its hash is gone, -2 canceled."""
    script_keys = [keys.started, keys.intermediate, worker_key(worker)]
    script_keys.append(worker_executions_key(worker))
    codes: list[int] = []
    for part in _slices(jobs):
        args: list[Any] = [*PRELUDE, worker, *_lease(now, lease), _pairs(part)]
        codes += _codes(run(client, START, script_keys, args))
    return codes


def refresh(
    client: redis.Redis, keys: QueueKeys, jobs: Sequence[RqJob], lease: int, now: float
) -> list[int]:
    """Renew the started-registry leases of running jobs (refresh.lua): a code per
    job, 1 renewed, 0 gone from the started registry."""
    codes: list[int] = []
    for part in _slices(jobs):
        args: list[Any] = [*PRELUDE, *_lease(now, lease), _pairs(part)]
        codes += _codes(run(client, REFRESH, [keys.started], args))
    return codes


def finish(
    client: redis.Redis,
    worker: str,
    keys: QueueKeys,
    done: Sequence[tuple[RqJob, Outcome]],
    now: float,
) -> tuple[list[int], list[str]]:
    """Record jobs for which ``RqJob.fast`` holds (finish.lua): returns a code per
    job (1 recorded, 0 its execution left the started registry) and the ids of
    recorded jobs that have dependents."""
    if len(done) > SCRIPT_JOBS:
        codes, dependents = [], []
        for at in range(0, len(done), SCRIPT_JOBS):
            more = finish(client, worker, keys, done[at : at + SCRIPT_JOBS], now)
            codes += more[0]
            dependents += more[1]
        return codes, dependents
    fields: list[str] = []
    for job, outcome in done:
        assert job.started is not None
        if outcome.kind == OK:
            kind, payload, ttl = "s", outcome.payload or "", str(job.result_ttl)
        else:
            text = (outcome.payload or "").encode()
            kind, payload = "f", b64encode(zlib.compress(text)).decode()
            ttl = "" if job.failure_ttl is None else str(job.failure_ttl)
        fields += (
            kind,
            job.id,
            job.execution_id,
            now_text(outcome.started),
            now_text(outcome.ended),
            repr(job.started),
            repr(outcome.ended),
            payload,
            ttl,
            repr(working_seconds(outcome.started, outcome.ended)),
        )
    args = [*PRELUDE, worker, current_timestamp(), DEFAULT_FAILURE_TTL, json.dumps(fields)]
    script_keys = [keys.started, keys.finished, keys.failed, worker_key(worker)]
    script_keys.append(worker_executions_key(worker))
    codes, dependents = run(client, FINISH, script_keys, args)
    return [int(c) for c in codes.decode()], [d.decode() for d in dependents]
