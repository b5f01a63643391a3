"""Threat: forged, changed, moved, swapped and truncated batch entries and results
(threats 1, 2, 4), against signed batches and results end to end: real
redis-server, real ``taskfan worker``s. Signing alone: ``test_security_signatures.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import redis

from producer import Client, Executor
from producer.enqueue import Enqueuer
from producer.ops import deadletters, peek
from producer.records import JobSpec
from taskfan import scripts
from taskfan.codec import JSON, PICKLE
from taskfan.errors import SignatureError, TaskFailed, TaskfanError
from taskfan.keys import JobKeys, QueueKeys
from taskfan.options import CallMode
from taskfan.outcomes import encode_result
from taskfan.protocol import BatchEntry
from taskfan.signing import Keyring
from tests import tasks
from tests.cli_support import clean_env, clean_environ, invoke, outcomes, run_taskfan, write_lines
from tests.conftest import StartWorker
from tests.helpers import wait_until

__all__ = ["clean_env"]

SECRET = "e2e-secret-0123456789abcdef"
OTHER = "other-secret-0123456789abcdef"
DEAD = QueueKeys("default").dead


@pytest.fixture
def secret_file(tmp_path: Path) -> str:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return str(path)


def dead_letters(r: redis.Redis) -> list[dict[bytes, bytes]]:
    entries: Any = r.xrange(DEAD)
    return [fields for _, fields in entries]


def test_signed_jobs_run_and_every_result_is_signed(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, secret_file: str
) -> None:
    worker = start_worker("--secret-file", secret_file)
    client = Client.from_url(redis_url, secret=SECRET)
    job = client.map(tasks.fail_if_multiple_of_7, range(1, 30), batch_size=5)
    assert [o.value for o in job.outcomes(timeout=60) if o.ok] == [
        2 * x for x in range(1, 30) if x % 7
    ]
    raw: Any = r.hgetall(JobKeys(job.id).results)
    assert len(raw) == 6 and all(value.startswith(b"TFS1") for value in raw.values())
    assert r.hget(JobKeys(job.id).meta, "sig") is not None
    # A retry round is signed too, from the verified meta.
    assert job.retry_failed() == 4
    assert job.wait(timeout=60)
    assert [o.attempts for o in job.errors()] == [2, 2, 2, 2]
    with Executor(client) as executor:
        assert executor.submit(tasks.add, 2, 3).result(timeout=60) == 5
    assert not dead_letters(r)
    assert "signed batches only" in worker.log()


def test_unsigned_batches_are_dead_lettered_and_their_items_fail(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, secret_file: str, tmp_path: Path
) -> None:
    start_worker("--secret-file", secret_file)
    marker = tmp_path / "ran"
    job = Client.from_url(redis_url).map(tasks.touch, [str(marker)] * 6, batch_size=2)
    assert job.wait(timeout=60)  # the producer does not hang on its refused batches
    failed = list(job.outcomes())
    assert [o.index for o in failed if not o.ok] == list(range(6))
    assert {o.error.type for o in failed if o.error} == {"BadSignature"}
    assert all(
        "bad signature: the batch is not signed" in o.error.message for o in failed if o.error
    )
    assert not marker.exists()
    letters = dead_letters(r)
    assert len(letters) == 3
    assert all(b"bad signature" in fields[b"reason"] for fields in letters)
    assert {fields[b"j"] for fields in letters} == {job.id.encode()}
    # A reader with the secret does not take the unsigned job, nor the node's unsigned
    # record, for an answer: the meta's check comes first.
    with pytest.raises(SignatureError, match=rf"^job {job.id} meta: the job's meta is not signed"):
        list(Client.from_url(redis_url, secret=SECRET).job(job.id).outcomes())


def test_a_batch_changed_in_redis_never_runs(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, secret_file: str, tmp_path: Path
) -> None:
    """Someone who can write to Redis takes a signed batch and changes what it runs."""
    client = Client.from_url(redis_url, secret=SECRET)
    job = client.map(tasks.identity, [1, 2], batch_size=2)  # queued; no node runs yet
    stream = QueueKeys("default").stream
    entries: Any = r.xrange(stream)
    [(entry_id, fields)] = entries
    marker = tmp_path / "ran"
    forged = {**fields, b"f": b"tests.tasks:touch", b"p": JSON.dumps([str(marker), "x"])}
    r.xdel(stream, entry_id)
    r.xadd(stream, forged)
    start_worker("--secret-file", secret_file)
    assert job.wait(timeout=60)
    assert not marker.exists()
    [letter] = dead_letters(r)
    assert b"the batch was changed after it was signed" in letter[b"reason"]
    assert f"(job {job.id} batch 0): bad signature".encode() in letter[b"reason"]
    with pytest.raises(SignatureError, match=f"job {job.id} batch 0: the result is not signed"):
        list(job.results())


def test_forged_entries_never_pass_for_another_job_s_results(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, secret_file: str, tmp_path: Path
) -> None:
    """Forged entries naming a victim's batches get there first. The victim's job
    still finishes, its reader gets a SignatureError for the batch (the forger
    can deny service, as any direct write to Redis can; it cannot answer for
    the batch), and the function the forgeries name never runs."""
    client = Client.from_url(redis_url, secret=SECRET)
    victim = "feedfacecafebeef"
    marker = tmp_path / "ran"
    stream = QueueKeys("default").stream

    def forged(job_id: str, index: int) -> Any:
        return BatchEntry(
            job_id, index, 5 * index, 1, "tests.tasks:touch", "json", CallMode.ONE, 0,
            JSON.dumps([str(marker)]),
        ).fields()  # fmt: skip

    r.xadd(stream, forged(victim, 0))  # unsigned
    other_key = Keyring([OTHER]).sign_batch("default", forged(victim, 1))
    r.xadd(stream, cast(Any, other_key))  # signed, with another key
    r.xadd(stream, forged("0123456789abcdef", 0))  # a job that does not exist
    spec = JobSpec("default", "tests.tasks:square", client.codec, CallMode.ONE, 5, 0, 60)
    Enqueuer(client.redis, spec, victim, keyring=client.keyring).run(range(10))
    start_worker("--secret-file", secret_file)
    job = client.job(victim)
    assert job.wait(timeout=60)
    with pytest.raises(SignatureError, match=rf"^job {victim} batch 0: the result is not signed"):
        list(job.results())
    wait_until(lambda: len(dead_letters(r)) == 3, message="three dead letters")
    reasons = [fields[b"reason"].decode() for fields in dead_letters(r)]
    assert all("bad signature" in reason for reason in reasons)
    assert f"(job {victim} batch 1): bad signature" in reasons[1]
    assert "which is not one of this node's secrets" in reasons[1]
    assert not marker.exists()
    assert not r.exists(JobKeys("0123456789abcdef").meta)  # nothing written for it


def test_readers_refuse_results_moved_or_changed_in_redis(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, secret_file: str
) -> None:
    start_worker("--secret-file", secret_file)
    client = Client.from_url(redis_url, secret=SECRET)
    job = client.map(tasks.square, range(4), batch_size=2)
    assert list(job.results(timeout=60)) == [0, 1, 4, 9]
    results = JobKeys(job.id).results
    first, second = r.hget(results, "0"), r.hget(results, "1")
    assert first is not None and second is not None
    r.hset(results, "0", second)  # batch 1's signed result, replayed onto batch 0
    with pytest.raises(SignatureError, match=rf"^job {job.id} batch 0: bad signature"):
        list(job.results())
    r.hset(results, "0", first)
    assert list(job.results()) == [0, 1, 4, 9]
    with pytest.raises(SignatureError, match="not one of this producer's secrets"):
        list(Client.from_url(redis_url, secret=OTHER).job(job.id).results())
    assert list(Client.from_url(redis_url).job(job.id).results()) == [0, 1, 4, 9]


def test_a_retry_never_signs_a_meta_someone_changed(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, secret_file: str
) -> None:
    start_worker("--secret-file", secret_file)
    job = Client.from_url(redis_url, secret=SECRET).map(tasks.fail, [1, 2])
    assert job.wait(timeout=60)
    r.hset(JobKeys(job.id).meta, "fn", "tests.tasks:touch")
    with pytest.raises(SignatureError, match=rf"^job {job.id} meta: bad signature on the job's"):
        job.retry_failed()
    assert r.xlen(QueueKeys("default").stream) == 0


def test_executor_futures_fail_one_by_one_on_a_bad_result(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, secret_file: str
) -> None:
    """A submit whose result cannot be trusted fails its own future, not the others."""
    worker = start_worker("--secret-file", secret_file)
    with Executor(redis_url, secret=SECRET) as executor:
        good = executor.submit(tasks.add, 1, 2)
        assert good.result(timeout=60) == 3
        worker.stop()
        bad = executor.submit(tasks.add, 3, 4)
        later = executor.submit(tasks.add, 5, 6)
        job_id = executor._job.id  # type: ignore[union-attr]
        # Someone records an unsigned answer for the second call before any node does.
        fake = encode_result(1, 1, 0, [PICKLE.dumps([[99], [], []])])
        scripts.record_batch(r, JobKeys(job_id), "1", fake, 1, 0, 0.0)
        start_worker("--secret-file", secret_file)
        with pytest.raises(SignatureError, match=f"job {job_id} batch 1: the result is not"):
            bad.result(timeout=60)
        assert later.result(timeout=60) == 11


@pytest.mark.usefixtures("clean_env")
def test_the_cli_signs_and_verifies_with_a_secret_file(
    redis_url: str, start_worker: StartWorker, secret_file: str, tmp_path: Path
) -> None:
    start_worker("--secret-file", secret_file)
    path = write_lines(tmp_path / "in.jsonl", ["1", "2", "3"])
    result = invoke(
        "enqueue", "tests.tasks:square", "-i", str(path), "--secret-file", secret_file,
        "--redis-url", redis_url,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    args = ["results", result.stdout.strip(), "--timeout", "60", "--redis-url", redis_url]
    verified = invoke(*args, "--secret-file", secret_file)
    assert verified.exit_code == 0, verified.output
    assert [o["result"] for o in outcomes(verified.stdout)] == [1, 4, 9]
    other = tmp_path / "other"
    other.write_text(OTHER)
    refused = invoke(*args, "--secret-file", str(other))
    assert refused.exit_code == 2
    assert "not one of this producer's secrets" in refused.stderr
    # Unsigned from the shell: the node refuses it, and says why in each outcome.
    unsigned = invoke("enqueue", "tests.tasks:square", "-i", str(path), "--wait",
                      "--redis-url", redis_url)  # fmt: skip
    assert unsigned.exit_code == 1
    assert {o["error"]["type"] for o in outcomes(unsigned.stdout)} == {"BadSignature"}


@pytest.mark.usefixtures("clean_env")
def test_taskfan_run_gives_its_worker_the_secret(
    redis_url: str, secret_file: str, tmp_path: Path
) -> None:
    path = write_lines(tmp_path / "in.jsonl", ["2", "3"])
    done = run_taskfan(
        "run", "tests.tasks:square", "-i", str(path), "--secret-file", secret_file,
        "--processes", "1", "--redis-url", redis_url, env=clean_environ(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [o["result"] for o in outcomes(done.stdout)] == [4, 9]


def test_task_failures_still_travel_under_signing(
    redis_url: str, start_worker: StartWorker, secret_file: str
) -> None:
    start_worker("--secret-file", secret_file)
    job = Client.from_url(redis_url, secret=SECRET).map(tasks.fail, [5])
    with pytest.raises(TaskFailed, match="bad 5"):
        list(job.results(timeout=60))


@pytest.mark.usefixtures("clean_env")
def test_dead_letters_are_requeued_signed_and_only_if_their_signature_holds(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, secret_file: str
) -> None:
    strict = start_worker("--secret-file", secret_file, "--allow", "tests.marker_task")
    client = Client.from_url(redis_url, secret=SECRET)
    job = client.map(tasks.square, [1, 2, 3], batch_size=3)
    assert job.wait(timeout=60)  # refused: the function is outside that node's allowlist
    [(dead_id, letter)] = cast(Any, r.xrange(DEAD))
    dead_id = dead_id.decode()
    meta = job.meta()
    [failure, *_] = list(peek.failures(r, meta, 10))  # operators' tools read signed entries
    assert failure.error is not None and failure.error.type == "FunctionNotAllowed"
    # Someone adds a dead letter of their own for the job: it is never signed for them.
    forged = {k: v for k, v in letter.items() if k not in (b"reason", b"entry", b"at")}
    forged[b"f"] = b"tests.tasks:touch"
    forged_id = cast(
        bytes, r.xadd(DEAD, {b"reason": letter[b"reason"], b"entry": b"0-1", **forged})
    )
    with pytest.raises(TaskfanError, match="no producer with the secret sent it"):
        deadletters.requeue(r, "default", forged_id.decode(), client.keyring)
    with pytest.raises(TaskfanError, match="requeueing it needs the secret"):
        deadletters.requeue(r, "default", dead_id)
    strict.stop()
    start_worker("--secret-file", secret_file, "--allow", "tests.tasks")
    args = ["dead", "default", dead_id, "--requeue", "--redis-url", redis_url]
    done = invoke(*args, "--secret-file", secret_file)
    assert done.exit_code == 0, done.output
    assert job.wait(timeout=60)
    assert list(job.results()) == [1, 4, 9]


def test_truncated_and_swapped_results_are_refused(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, secret_file: str
) -> None:
    start_worker("--secret-file", secret_file)
    job = Client.from_url(redis_url, secret=SECRET).map(tasks.square, range(4), batch_size=2)
    assert list(job.results(timeout=60)) == [0, 1, 4, 9]
    results = JobKeys(job.id).results
    first, second = cast(list[bytes], r.hmget(results, ["0", "1"]))
    r.hset(results, "1", second[:-3])  # truncated
    with pytest.raises(SignatureError, match=rf"^job {job.id} batch 1: bad signature"):
        list(job.results())
    r.hset(results, mapping={"0": second, "1": first})  # swapped
    with pytest.raises(SignatureError, match=rf"^job {job.id} batch 0: bad signature"):
        list(job.results())


def test_a_batch_moved_to_another_queue_never_runs(
    redis_url: str, r: redis.Redis, start_worker: StartWorker, secret_file: str, tmp_path: Path
) -> None:
    """A signed batch of a queue whose nodes may run it, moved to one whose nodes
    may not (or the other way): the queue name is part of what is signed."""
    marker = tmp_path / "ran"
    job = Client.from_url(redis_url, secret=SECRET, queue="low").map(tasks.touch, [str(marker)])
    entries: Any = r.xrange(QueueKeys("low").stream)
    [(entry_id, fields)] = entries
    r.xdel(QueueKeys("low").stream, entry_id)
    r.xadd(QueueKeys("high").stream, fields)
    start_worker("--secret-file", secret_file, queue="high")
    wait_until(lambda: r.xlen(QueueKeys("high").dead) == 1, timeout=60, message="a dead letter")
    letters: Any = r.xrange(QueueKeys("high").dead)
    assert b"moved from another queue" in letters[0][1][b"reason"]
    assert not marker.exists()
    # Its items were recorded failed, unsigned (so its job ends): no answer to a reader.
    with pytest.raises(SignatureError, match=f"job {job.id} batch 0: the result is not signed"):
        list(job.results(timeout=60))
