"""The one writer of a job's records (``producer.records.JobRecords``), as a unit
on fakeredis, and the rule that keeps it the only one: no other module of
``producer/`` writes a job's meta, counters or entries. The paths that use it
(enqueue, Executor.submit, retry rounds, requeued dead letters) are tested end to
end elsewhere (test_enqueue, test_executor, test_retries, test_ops_dead,
test_security_*)."""

from __future__ import annotations

import ast
import dataclasses
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from producer.records import JobRecords, JobSpec
from taskfan import keys
from taskfan.codec import PICKLE
from taskfan.errors import SignatureError
from taskfan.keys import QueueKeys
from taskfan.meta import JobMeta
from taskfan.options import CallMode
from taskfan.outcomes import ResultEntry, encode_result
from taskfan.pipelines import Sequenced
from taskfan.protocol import BatchEntry
from taskfan.sign_result import open_result
from taskfan.signing import Keyring

ROOT = Path(__file__).resolve().parents[1]
QUEUE = "q"
KEYRING = Keyring(["a secret of the test"])
SPEC = JobSpec(QUEUE, "tests.tasks:square", PICKLE, CallMode.ONE, 4, 0, 600)


def writer(keyring: Keyring | None = KEYRING, job_id: str = "j1") -> JobRecords:
    return JobRecords(job_id, QUEUE, "n0nce", keyring)


def meta_of(r: fakeredis.FakeRedis, records: JobRecords) -> dict[bytes, bytes]:
    raw: Any = r.hgetall(records.job.meta)
    return dict(raw)


def entry(index: int, count: int = 2) -> BatchEntry:
    return BatchEntry(
        job_id="j1", index=index, start=2 * index, count=count, fn_ref=SPEC.fn_ref,
        codec="pickle", mode=CallMode.ONE, chunksize=0, payload=PICKLE.dumps([1] * count),
    )  # fmt: skip


def test_an_unsealed_job_is_created_signed_indexed_and_leased(fake: fakeredis.FakeRedis) -> None:
    records = writer()
    seq = Sequenced(fake)
    records.create(seq, SPEC, time.time(), lease=30.0)
    seq.execute()
    raw = meta_of(fake, records)
    KEYRING.verify_job("j1", raw)
    meta = JobMeta.parse("j1", raw)
    assert (meta.sealed, meta.total, meta.batches, meta.status) == (False, 0, 0, "enqueuing")
    assert float(raw[b"lease_until"]) > time.time()
    assert raw[b"nonce"] == b"n0nce"
    assert fake.zscore(QueueKeys(QUEUE).jobs, "j1") is not None
    assert fake.sismember(keys.QUEUES, QUEUE)
    assert fake.ttl(records.job.meta) == -1


def test_a_job_born_sealed_without_batches_is_finished_and_expires(
    fake: fakeredis.FakeRedis,
) -> None:
    records = writer()
    seq = Sequenced(fake)
    records.create(seq, SPEC, time.time(), sealed=(0, 0))
    seq.execute()
    raw = meta_of(fake, records)
    KEYRING.verify_job("j1", raw)  # the totals too (tsig)
    assert b"tsig" in raw and b"lease_until" not in raw
    assert JobMeta.parse("j1", raw).status == "finished"
    assert 0 < fake.ttl(records.job.meta) <= SPEC.result_ttl


def test_a_job_born_sealed_with_batches_is_queued(fake: fakeredis.FakeRedis) -> None:
    records = writer()
    seq = Sequenced(fake)
    records.create(seq, SPEC, time.time(), sealed=(5, 3))
    seq.execute()
    meta = JobMeta.parse("j1", meta_of(fake, records))
    assert (meta.sealed, meta.total, meta.batches, meta.status) == (True, 5, 3, "queued")
    assert fake.ttl(records.job.meta) == -1


def test_entries_are_counted_and_queued_signed_with_the_nonce(fake: fakeredis.FakeRedis) -> None:
    records = writer()
    seq = Sequenced(fake)
    records.create(seq, SPEC, time.time(), lease=30.0)
    for index in range(2):
        records.count(seq.pipe, 2, 1)
        records.queue_entry(seq.pipe, entry(index), time.time())
    seq.execute()
    meta = JobMeta.parse("j1", meta_of(fake, records))
    assert (meta.total, meta.batches) == (4, 2)
    queued: Any = fake.xrange(QueueKeys(QUEUE).stream)
    assert len(queued) == 2
    for (entry_id, fields), index in zip(queued, range(2), strict=True):
        KEYRING.verify_batch(QUEUE, fields)
        assert fields[b"u"] == b"n0nce" and int(fields[b"t"]) <= time.time()
        assert BatchEntry.parse(fields, str(entry_id)).index == index
    with pytest.raises(SignatureError):
        KEYRING.verify_batch("another queue", queued[0][1])


def test_without_a_keyring_nothing_is_signed(fake: fakeredis.FakeRedis) -> None:
    records = writer(keyring=None)
    seq = Sequenced(fake)
    records.create(seq, SPEC, time.time(), sealed=(2, 1))
    records.queue_entry(seq.pipe, entry(0), time.time())
    seq.execute()
    raw = meta_of(fake, records)
    assert b"sig" not in raw and b"tsig" not in raw
    queued: Any = fake.xrange(QueueKeys(QUEUE).stream)
    (_, fields), = queued  # fmt: skip
    assert fields == {k.encode(): v if isinstance(v, bytes) else str(v).encode()
                      for k, v in entry(0).fields().items()}  # fmt: skip


def test_sealing_fixes_the_totals_signed(fake: fakeredis.FakeRedis) -> None:
    records = writer()
    seq = Sequenced(fake)
    records.create(seq, SPEC, time.time(), lease=30.0)
    records.count(seq.pipe, 7, 2)
    seq.execute()
    assert records.seal(fake, 7, 2, time.time()) == 1
    raw = meta_of(fake, records)
    KEYRING.verify_job("j1", raw)
    meta = JobMeta.parse("j1", raw)
    assert (meta.sealed, meta.total, meta.batches) == (True, 7, 2)


def test_a_result_the_producer_records_is_sealed_for_its_batch(fake: fakeredis.FakeRedis) -> None:
    records = writer()
    seq = Sequenced(fake)
    records.create(seq, SPEC, time.time(), sealed=(1, 1))
    seq.execute()
    blob = PICKLE.dumps([[None], [[0, "InvalidInput", "bad line", "", None]], []])
    plain = encode_result(0, 1, 1, [blob])
    sealed = records.result_entry(0, "pickle", plain)
    assert sealed != plain and writer(keyring=None).result_entry(0, "pickle", plain) == plain
    records.record(fake, 0, sealed, 1, time.time())
    stored: Any = fake.hget(records.job.results, "0")
    opened = open_result(KEYRING, stored, "j1", 0, "pickle", "here")
    assert ResultEntry.parse(opened, "here").failed == 1
    with pytest.raises(SignatureError):
        open_result(KEYRING, stored, "j1", 1, "pickle", "here")  # another batch's
    meta = JobMeta.parse("j1", meta_of(fake, records))
    assert (meta.failed, meta.done, meta.status) == (1, 1, "finished")


def test_a_dead_letter_goes_back_as_it_was_unsigned_and_signed_anew_signed(
    fake: fakeredis.FakeRedis,
) -> None:
    stream, dead = QueueKeys(QUEUE).stream, QueueKeys(QUEUE).dead
    as_was = {b"j": b"j1", b"extra": b"kept"}
    for keyring in (None, KEYRING):
        added: Any = fake.xadd(dead, {"reason": "x"})
        dead_id = added.decode()
        new_id = writer(keyring).requeue_dead(fake, dead_id, entry(0), time.time(), as_was)
        assert fake.xlen(dead) == 0
        found: Any = fake.xrange(stream, new_id, new_id)
        (_, fields), = found  # fmt: skip
        if keyring is None:
            assert fields == as_was
        else:
            KEYRING.verify_batch(QUEUE, fields)
        fake.delete(stream)


def test_a_retry_round_is_signed_and_queued_whole(fake: fakeredis.FakeRedis) -> None:
    records = writer()
    records.sign_round(fake, 3, "[0,1]")
    signature: Any = fake.hget(records.job.meta, "rsig:3")
    assert signature == KEYRING.sign_round("j1", "n0nce", 3, "[0,1]").encode()
    retried = [dataclasses.replace(entry(index), offsets=(0, 1)) for index in range(2)]
    records.queue_round(fake, retried, 3, time.time())
    queued: Any = fake.xrange(QueueKeys(QUEUE).stream)
    parsed = [BatchEntry.parse(fields, "here") for _, fields in queued]
    assert [(e.index, e.round) for e in parsed] == [(0, 3), (1, 3)]
    writer(keyring=None).sign_round(fake, 4, "[0]")
    assert not fake.hexists(records.job.meta, "rsig:4")


# --------------------------------------------------------------------------- the rule

#: calls that write a job's meta, counters, entries or results
WRITES = {"hset", "hsetnx", "hincrby", "hmset", "xadd", "expire"}
WRITING_SCRIPTS = {
    "seal_job", "record_batch", "prepare_retry_round", "prepare_requeue_round", "sign_round",
    "open_round",
}  # fmt: skip
#: what builds signed records; only the writer uses them
BUILDERS = {"batch_fields", "sign_meta", "sign_totals", "index_job", "lease_field"}


def _writes(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name, owner = node.func.attr, node.func.value
            is_script = isinstance(owner, ast.Name) and owner.id == "scripts"
            if (name in WRITES and not is_script) or (is_script and name in WRITING_SCRIPTS):
                found.append(f"line {node.lineno}: .{name}()")
        elif isinstance(node, ast.ImportFrom) and node.module == "producer.records":
            found += [f"line {node.lineno}: imports {a.name}" for a in node.names
                      if a.name in BUILDERS]  # fmt: skip
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in BUILDERS
        ):
            found.append(f"line {node.lineno}: {node.func.id}()")
    return found


#: the writer itself
ALLOWED = {"producer/records.py"}


def test_no_module_but_the_writer_writes_a_jobs_records() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {what}"
        for path in sorted((ROOT / "producer").rglob("*.py"))
        if str(path.relative_to(ROOT)) not in ALLOWED
        for what in _writes(ast.parse(path.read_text(), str(path)))
    ]
    assert offenders == []


def test_the_rule_sees_a_write() -> None:
    source = "pipe.hincrby(k, 'total', 1)\nscripts.seal_job(r, j, 1, 1, 0)\nbatch_fields(e)\n"
    assert len(_writes(ast.parse(source))) == 3
    assert _writes(ast.parse("scripts.cancel_job(r, j, 0)\nr.hget(k, 'x')\n")) == []
