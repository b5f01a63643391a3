"""Threat: a captured signed batch entry is added to the queue again (a replay).

A copy of a signed entry is still signed. Signed entries carry their issue time
(``t``) and their job's nonce (``u``, signed into the job's meta too), and a
node with the secret refuses (dead-letters, with the reason, running nothing) an
entry older than ``max_entry_age`` (default: the result TTL), one of a job that
has finished, expired or been deleted, and one whose nonce is not its job's.
See ``worker.core.replays``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client
from producer.records import batch_fields
from taskfan.errors import SignatureError
from taskfan.keys import JobKeys, QueueKeys
from taskfan.options import CallMode
from taskfan.protocol import BatchEntry
from taskfan.settings import DEFAULT_RESULT_TTL, Settings
from taskfan.signing import Keyring
from tests import tasks
from tests.conftest import StartWorker
from tests.helpers import wait_until
from worker.core.batches import Delivery, JobFacts
from worker.core.entry_checks import Guard

SECRET = "replay-secret-0123456789abcdef"
KEYRING = Keyring([SECRET])
QUEUE = QueueKeys("default")
NONCE = "00112233aabbccdd"


def _captured(client: Client, r: redis.Redis, marker: Path) -> tuple[str, dict[bytes, bytes]]:
    """A job of one batch that touches ``marker``, and its entry as queued (no node
    runs yet): what someone reading the stream could copy."""
    job = client.map(tasks.touch, [str(marker)])
    entries: Any = r.xrange(QUEUE.stream)
    [(_, fields)] = entries
    return job.id, fields


def _replayed(r: redis.Redis, fields: dict[bytes, bytes], marker: Path) -> bytes:
    """Add the captured entry again; the reason it was dead-lettered with."""
    marker.unlink(missing_ok=True)
    before = r.xlen(QUEUE.dead)
    r.xadd(QUEUE.stream, fields)  # type: ignore[arg-type]
    wait_until(lambda: r.xlen(QUEUE.dead) > before, timeout=30,
               message=lambda: f"a dead letter; the task ran again: {marker.exists()}")  # fmt: skip
    last: Any = r.xrevrange(QUEUE.dead, count=1)
    assert not marker.exists()  # it never ran again
    reason: bytes = last[0][1][b"reason"]
    return reason


@pytest.fixture
def signed(redis_url: str) -> Client:
    return Client.from_url(redis_url, secret=SECRET)


def test_a_replay_after_the_job_finished_or_expired_never_runs(
    signed: Client, r: redis.Redis, start_worker: StartWorker, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    job_id, fields = _captured(signed, r, marker)
    start_worker(env={"TASKFAN_SECRET": SECRET})
    assert signed.job(job_id).wait(timeout=60) and marker.exists()
    assert b"its job has finished" in _replayed(r, fields, marker)
    r.delete(*JobKeys(job_id).all())  # as when its result TTL passes
    assert b"its job no longer exists" in _replayed(r, fields, marker)


def test_a_replay_onto_a_meta_written_again_is_refused_by_its_nonce(
    signed: Client, r: redis.Redis, start_worker: StartWorker, tmp_path: Path
) -> None:
    """The job expired, and someone wrote its meta again, active, to run the copy."""
    marker = tmp_path / "ran"
    job_id, fields = _captured(signed, r, marker)
    start_worker(env={"TASKFAN_SECRET": SECRET})
    assert signed.job(job_id).wait(timeout=60)
    meta = JobKeys(job_id).meta
    raw: Any = r.hgetall(meta)
    r.delete(*JobKeys(job_id).all())
    r.hset(meta, mapping={**raw, b"state": b"active", b"nonce": b"0000000000000000"})
    assert b"its nonce is not its job's" in _replayed(r, fields, marker)


def _delivery(issued: float, job: JobFacts | None, **extra: Any) -> Delivery:
    entry = BatchEntry("0123456789abcdef", 0, 0, 1, "tests.tasks:touch", "json",
                       CallMode.ONE, 0, b'["x"]')  # fmt: skip
    fields = batch_fields(entry, "default", KEYRING, NONCE, issued)
    raw = {name.encode(): str(value).encode() if isinstance(value, int) else value
           for name, value in {**fields, **extra}.items()}  # fmt: skip
    return Delivery(QUEUE, b"1-0", {k: v if isinstance(v, bytes) else v.encode()
                                    for k, v in raw.items()}, job=job)  # fmt: skip


ACTIVE = JobFacts(b"active", NONCE.encode())


def test_an_entry_older_than_max_entry_age_is_refused() -> None:
    now = [1_000_000.0]
    guard = Guard(KEYRING, max_entry_age=3600, clock=lambda: now[0])
    fresh = _delivery(now[0], ACTIVE)
    assert guard.bad_signature(fresh) is None and guard.replay(fresh) is None
    now[0] += 3601
    assert "issued 3601s ago, more than max_entry_age (3600s" in (guard.replay(fresh) or "")
    now[0] -= 2 * 3602
    assert "in the future" in (guard.replay(fresh) or "")
    assert Guard(max_entry_age=1, clock=lambda: 0.0).replay(fresh) is None  # no secret: no check


def test_the_default_age_limit_is_the_result_ttl() -> None:
    assert Settings().entry_age_limit == DEFAULT_RESULT_TTL
    assert Settings(result_ttl=600).entry_age_limit == 600
    assert Settings(result_ttl=600, max_entry_age=60).entry_age_limit == 60
    assert Settings(result_ttl=0).entry_age_limit == DEFAULT_RESULT_TTL
    assert Settings.from_env({"TASKFAN_MAX_ENTRY_AGE": "120"}).entry_age_limit == 120


def test_job_state_and_nonce_checks() -> None:
    guard = Guard(KEYRING, clock=lambda: 1000.0)
    reasons = {
        "finished": guard.replay(_delivery(1000, JobFacts(b"finished", NONCE.encode()))),
        "gone": guard.replay(_delivery(1000, JobFacts(None, None))),
        "nonce": guard.replay(_delivery(1000, JobFacts(b"active", b"ffff"))),
        "no nonce": guard.replay(_delivery(1000, JobFacts(b"active", None))),
        "cancelled": guard.replay(_delivery(1000, JobFacts(b"cancelled", NONCE.encode()))),
        "retry of finished": guard.replay(
            _delivery(1000, JobFacts(b"finished", NONCE.encode()), r=1, x="[0]")
        ),
    }
    assert "its job has finished" in (reasons["finished"] or "")
    assert "no longer exists" in (reasons["gone"] or "")
    assert "nonce is not its job's" in (reasons["nonce"] or "")
    assert "nonce is not its job's" in (reasons["no nonce"] or "")
    assert reasons["cancelled"] is None  # skipped as before, not a replay
    assert reasons["retry of finished"] is None  # a round's entries precede its opening


def test_signing_version_1_entries_are_refused() -> None:
    delivery = _delivery(1000, ACTIVE)
    assert delivery.fields is not None
    fields = {**delivery.fields, b"g": b"1" + delivery.fields[b"g"][1:]}
    with pytest.raises(SignatureError, match="signing version 1 carries no issue time"):
        KEYRING.verify_batch("default", fields)
