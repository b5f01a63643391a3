"""The node as an RQ worker (``RqWorker``): registered in RQ's worker registry
under the node's name, heartbeating, busy or idle, and recording through RQ's
own ``SimpleWorker`` code the outcomes finish.lua leaves to it: retries (a job
with retries left, or one returning ``rq.Retry``), ``result_ttl=0``,
``failure_ttl=0``, RQ 3's rate-limited jobs, job hashes not written by RQ 2.12+
or 3.x, a cold stop; and failing
the jobs taskfan does not run. Also what RQ's worker does after a job ends:
enqueue the jobs that depend on it.
"""

from __future__ import annotations

import logging
import time
from base64 import b64decode
from collections.abc import Iterable, Sequence

import redis
from redis.client import Pipeline
from rq import worker_registration
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job, JobStatus, Retry
from rq.queue import Queue
from rq.worker import SimpleWorker, WorkerStatus

from taskfan.boundary import describe
from taskfan.errors import ConfigError
from worker.sources.rq.adapter.checks import serializer
from worker.sources.rq.adapter.clock import dt
from worker.sources.rq.adapter.intermediate import drop
from worker.sources.rq.adapter.jobs import OK, RETRY, Outcome, RqJob
from worker.sources.rq.adapter.keys import QueueKeys
from worker.sources.rq.adapter.versions import WORKER_CURRENT_JOB, execution_argument

log = logging.getLogger(__name__)


class _Worker(SimpleWorker):
    """RQ's worker, as the node's stand-in in RQ's records. It never runs a job: the
    node uses it to register, heartbeat, and record the outcomes finish.lua leaves
    to RQ's own code."""

    def _set_connection(self, connection: redis.Redis) -> redis.Redis:
        return connection  # RQ would raise the socket timeout to 415 s for its BLMOVE


class RqWorker:
    """The node, as an RQ worker: registered, heartbeating, recording outcomes."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        queues: Sequence[str],
        serializer_name: str | None,
        ttl: int,
    ) -> None:
        self.client = client
        self.serializer = serializer(serializer_name)
        self.queues = {q: Queue(q, connection=client, serializer=self.serializer) for q in queues}
        self._worker = _Worker(
            list(self.queues.values()),
            name=name,
            connection=client,
            serializer=self.serializer,
            worker_ttl=ttl,
        )
        self._worker.log = log  # one INFO line per batch is the node's; RQ's go to debug
        self.name = name

    def register(self) -> None:
        try:
            self._worker.register_birth()
        except ValueError:
            raise ConfigError(
                f"an RQ worker named {self.name!r} is registered already (a node of that "
                "name runs, or died less than its worker TTL ago): choose another --name"
            ) from None
        self._worker.set_state(WorkerStatus.IDLE)

    def unregister(self) -> None:
        self._worker.register_death()

    def heartbeat(self, busy_job: str | None) -> None:
        """Renew the worker's hash (re-creating it if it expired meanwhile), and say
        whether it is busy and with which job."""
        worker = self._worker
        pipe = self.client.pipeline(transaction=False)
        worker.heartbeat(pipeline=pipe)
        self._state(pipe, busy_job)
        created = pipe.execute()[0]
        if created:  # the hash had expired (a long Redis outage): write it whole
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(worker.key, mapping=worker.serialize())
            pipe.expire(worker.key, worker.worker_ttl)  # it may have expired again meanwhile
            worker_registration.register(worker, pipe)
            pipe.execute()

    def idle(self) -> None:
        """Nothing runs: as RQ's worker between jobs."""
        pipe = self.client.pipeline(transaction=False)
        self._state(pipe, None)
        pipe.execute()

    def _state(self, pipe: Pipeline, busy_job: str | None) -> None:
        key = self._worker.key
        state = WorkerStatus.IDLE if busy_job is None else WorkerStatus.BUSY
        pipe.hset(key, "state", state.value)
        if WORKER_CURRENT_JOB:  # RQ 2 (RQ 3 lists the worker's executions, start.lua)
            if busy_job is None:
                pipe.hdel(key, "current_job")
            else:
                pipe.hset(key, "current_job", busy_job)

    def _job(self, job: RqJob) -> Job:
        """The job as RQ's worker holds it while it runs (its hash, read afresh)."""
        rq_job = Job.fetch(job.id, connection=self.client, serializer=self.serializer)
        rq_job.worker_name = self.name
        return rq_job

    def record(self, job: RqJob, outcome: Outcome) -> bool:
        """Record one outcome through RQ's own worker code; False when its execution
        left the started registry (its lease lapsed and RQ moved the job on)."""
        assert job.started is not None
        keys = QueueKeys(job.queue)
        if self.client.zscore(keys.started, job.member) is None:
            return False
        worker, queue = self._worker, self.queues[job.queue]
        try:
            rq_job = self._job(job)
        except NoSuchJobError:  # deleted while it ran: nothing left to record in
            return False
        rq_job.started_at, rq_job.ended_at = dt(outcome.started), dt(outcome.ended)
        rq_job.last_heartbeat = rq_job.ended_at
        execution = Execution(job.execution_id, job.id, self.client, worker_name=self.name)
        execution.created_at = execution.last_heartbeat = dt(job.started)
        worker.execution = execution
        registry = queue.started_job_registry
        try:
            unreadable = None
            if outcome.kind == OK and outcome.payload is not None:
                try:
                    rq_job._result = self.serializer.loads(b64decode(outcome.payload))
                except BaseException as exc:  # the value's own code ran: whatever it raised
                    failure = describe(exc)
                    unreadable = (
                        f"the job's return value cannot be read back by the node: "
                        f"{failure.type}: {failure.message}\n{failure.traceback}"
                    )
            if outcome.kind == OK and unreadable is None:
                rq_job._status = JobStatus.FINISHED
                if outcome.payload is None:
                    rq_job._result = None
                worker.handle_job_success(rq_job, queue, registry, **execution_argument(execution))
            elif outcome.kind == RETRY:
                assert outcome.retry is not None
                maximum, intervals, at_front = outcome.retry
                retry = Retry(maximum, interval=intervals, enqueue_at_front=at_front)
                rq_job._result = retry  # RQ saves it with the requeued job (field "result")
                worker.handle_job_retry(rq_job, queue, retry, registry, execution)
            else:
                rq_job._status = JobStatus.FAILED
                text = unreadable or outcome.payload or ""
                worker.handle_job_failure(
                    rq_job, queue, registry, text, **execution_argument(execution)
                )
        finally:
            worker.execution = None
        return True

    def fail_unstarted(self, job: RqJob, reason: str) -> None:
        """Fail a job that will not run (unsupported), for good: no retries."""
        worker, queue = self._worker, self.queues[job.queue]
        try:
            rq_job = self._job(job)
        except NoSuchJobError:
            drop(self.client, QueueKeys(job.queue), [job.id])
            return
        rq_job.retries_left = None  # so RQ does not retry it; the hash keeps its value
        rq_job.ended_at = dt(time.time())
        worker.execution = None
        worker.handle_job_failure(rq_job, queue, exc_string=reason)
        drop(self.client, QueueKeys(job.queue), [job.id])

    def enqueue_dependents(self, queue: str, job_ids: Iterable[str]) -> None:
        """What RQ's worker does after a job ends: enqueue the jobs waiting for it."""
        for job_id in job_ids:
            try:
                job = Job.fetch(job_id, connection=self.client, serializer=self.serializer)
            except Exception as exc:  # e.g. deleted meanwhile
                log.warning("job %s: cannot enqueue its dependents: %s", job_id, exc)
                continue
            self.queues[queue].enqueue_dependents(job)
