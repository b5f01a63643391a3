"""Job-state lookups of a node: which jobs its batches belong to are still
active, cancelled (with terminate or not), abandoned or gone, with a short
cache so that a job of many batches costs one check a second; and ending the
jobs whose producer died mid-enqueue.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from taskfan import scripts
from taskfan.keys import JobKeys
from worker.core.batches import TERMINATED, Delivery, JobFacts
from worker.sources.streams.redis_groups import NodeRedisBase


class JobStates(NodeRedisBase):
    #: seconds a job found active is taken to be active without asking again
    ACTIVE_FOR = 1.0

    def _check_jobs(self, deliveries: list[Delivery], new: bool = False) -> list[Delivery]:
        """Mark batches of cancelled or vanished jobs.

        One round trip per read, but none for jobs found active in the last
        ``ACTIVE_FOR`` seconds: a job of many batches, or a stream of submits,
        costs one check a second. A batch of a job cancelled meanwhile is held
        until the heartbeat finds the job ended (``worker.core.liveness``): nothing
        more of it runs from then on, and record.lua drops the results of what
        ran before.

        Nor for a job whose batches in this read (``new``: read for the first
        time, not reclaimed) were all added within ``ACTIVE_FOR`` seconds, by
        Redis's clock (``trust_fresh``; not on a node with a secret, whose
        signed entries are checked against their job's meta): its producer was
        adding them moments ago, which says as much as a state read that old.
        Across a network that check was a round trip before a job's first batch
        could start. The heartbeat looks the job up (still enqueuing: see
        ``abandon_lapsed``) and checks it as any job of batches held, and the
        next read of it after that window reads its state.
        """
        now = self.clock()
        job_ids = {d.fields[b"j"] for d in deliveries if d.fields and job_key(d.fields.get(b"j"))}
        states = {j: b"active" for j in job_ids if self._active.get(j, -1.0) > now}
        if new and self.trust_fresh:
            fresh = self._fresh_jobs(deliveries) - states.keys()
            states.update(dict.fromkeys(fresh, b"active"))
            with self._enqueuing_lock:  # the heartbeat looks them up (abandon_lapsed)
                if len(self._unchecked) > 10_000:
                    self._unchecked.clear()
                self._unchecked.update(fresh)
        unknown = sorted(job_ids - states.keys())
        if unknown:
            found = self._states(unknown)
            if len(self._active) > 10_000:
                self._active = {j: t for j, t in self._active.items() if t > now}
            for job_id, state in found.items():
                states[job_id] = state
                if state == b"active":
                    self._active[job_id] = now + self.ACTIVE_FOR
        out = []
        for d in deliveries:
            if not d.fields or not job_key(d.fields.get(b"j")):
                out.append(d)  # parsing will dead-letter it
                continue
            job_id = d.fields[b"j"]
            state = states.get(job_id)
            facts = None
            if not isinstance(state, Exception):
                facts = JobFacts(state, self._nonces.get(job_id))
            why = _SKIP.get(state)
            out.append(dataclasses.replace(d, skip=why, job=facts))
        return out

    def _fresh_jobs(self, deliveries: list[Delivery]) -> set[bytes]:
        """The jobs all of whose batches here were added within ``ACTIVE_FOR``
        seconds (none while Redis's clock is unknown)."""
        if self.clock_offset is None:
            return set()
        redis_now = time.time() + self.clock_offset
        fresh: set[bytes] = set()
        stale: set[bytes] = set()
        for d in deliveries:
            job_id = d.fields.get(b"j") if d.fields else None
            if job_id is None:
                continue
            added = _added_at(d.entry_id)
            ok = added is not None and -self.ACTIVE_FOR <= redis_now - added <= self.ACTIVE_FOR
            (fresh if ok else stale).add(job_id)
        return fresh - stale

    def _states(self, job_ids: Sequence[bytes]) -> dict[bytes, Any]:
        """Each job's state (None: the job no longer exists), one round trip.
        Jobs still enqueuing are remembered for ``abandon_lapsed``."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(job_key(job_id) or "", "state", "sealed", "nonce", "terminate")
        sent = time.perf_counter()
        replies = pipe.execute(raise_on_error=False)
        self.round_trips.observe(time.perf_counter() - sent)
        states: dict[bytes, Any] = {}
        if len(self._nonces) > 10_000:
            self._nonces.clear()
        for job_id, reply in zip(job_ids, replies, strict=True):
            if isinstance(reply, Exception):
                states[job_id] = reply
                continue
            state, sealed, nonce, terminate = reply
            # a hard cancel (cancel.lua): the node also kills what runs of the job
            states[job_id] = _TERMINATED if state == b"cancelled" and terminate == b"1" else state
            if nonce is None:
                self._nonces.pop(job_id, None)
            else:
                self._nonces[job_id] = nonce
            if state == b"active" and sealed != b"1":
                with self._enqueuing_lock:
                    self._enqueuing.add(job_id.decode())
        return states

    def ended(self, job_ids: Sequence[str]) -> dict[str, str]:
        """The jobs of ``job_ids`` that are no longer active (cancelled, abandoned,
        gone): job id -> why."""
        states = self._states([job_id.encode() for job_id in job_ids])
        out = {}
        for job_id, state in states.items():
            why = _SKIP.get(state)
            if why is not None:
                out[job_id.decode()] = why
        return out

    def abandon_lapsed(self) -> dict[str, str]:
        """End as abandoned the jobs seen enqueuing whose producer's lease lapsed
        (lua/abandon.lua; idempotent, so every node may try); forget those no
        longer enqueuing. Returns the jobs abandoned now or before: job id -> why.
        One script call per job still enqueuing, once per heartbeat. Jobs whose
        batches ran unchecked (``_check_jobs``, just added) are looked up first,
        in one round trip, to learn which of them are still enqueuing."""
        with self._enqueuing_lock:
            unchecked, self._unchecked = self._unchecked, set()
        if unchecked:
            self._states(sorted(unchecked))
        with self._enqueuing_lock:
            jobs = sorted(self._enqueuing)
        out: dict[str, str] = {}
        for job_id in jobs:
            state = scripts.abandon_if_lapsed(self.client, JobKeys(job_id))
            if state == "enqueuing":
                continue
            with self._enqueuing_lock:
                self._enqueuing.discard(job_id)
            if state == "abandoned":
                out[job_id] = ABANDONED
        return out


ABANDONED = "the job was abandoned (its producer died mid-enqueue)"
#: the state of a job cancelled with terminate, as ``_states`` reports it
_TERMINATED = b"cancelled+terminate"
#: job state read from Redis -> why a batch of that job is skipped
_SKIP: dict[Any, str] = {
    None: "the job no longer exists",
    b"cancelled": "the job was cancelled",
    b"abandoned": ABANDONED,
    _TERMINATED: TERMINATED,
}


def _added_at(entry_id: bytes) -> float | None:
    """When a stream entry was added, by Redis's clock: its id's milliseconds."""
    try:
        return int(entry_id.split(b"-", 1)[0]) / 1000
    except ValueError:
        return None


def job_key(job_id: bytes | None) -> str | None:
    """The meta key of a job id read from an entry, or None when it cannot be one."""
    try:
        return JobKeys(job_id.decode("utf-8")).meta if job_id is not None else None
    except ValueError:  # UnicodeDecodeError too
        return None
