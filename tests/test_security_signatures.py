"""Threat: forged, changed, moved or swapped entries and results (threats 1, 2, 4),
met by signing alone: batches, results and job meta; keys, rotation, secrets and
settings. The same attacks against real nodes: ``test_security_forgery.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from taskfan import secret, sign_result
from taskfan.codec import JSON
from taskfan.errors import ConfigError, SignatureError
from taskfan.options import CallMode, TaskOptions
from taskfan.outcomes import encode_result
from taskfan.protocol import BatchEntry
from taskfan.settings import Settings
from taskfan.signing import Keyring

OLD = "old-secret-0123456789abcdef"
NEW = "new-secret-0123456789abcdef"


def wire(fields: dict[str, Any]) -> dict[bytes, bytes]:
    """Fields as a node reads them back from a stream."""
    return {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}


def entry(**changes: Any) -> BatchEntry:
    values: dict[str, Any] = dict(
        job_id="job1", index=3, start=30, count=2, fn_ref="tests.tasks:square", codec="json",
        mode=CallMode.ONE, chunksize=0, payload=JSON.dumps([1, 2]),
        options=TaskOptions(timeout=2.0),
    )  # fmt: skip
    values.update(changes)
    return BatchEntry(**values)


def signed(keyring: Keyring | None = None, queue: str = "default") -> dict[bytes, bytes]:
    return wire((keyring or Keyring([NEW])).sign_batch(queue, entry().fields()))


def test_a_signed_batch_verifies_and_still_parses() -> None:
    fields = signed()
    Keyring([NEW]).verify_batch("default", fields)
    assert BatchEntry.parse(fields, "entry") == entry()


@pytest.mark.parametrize("name", [b"j", b"b", b"s", b"n", b"f", b"c", b"m", b"k", b"p", b"o"])
def test_changing_any_field_breaks_the_signature(name: bytes) -> None:
    fields = signed()
    fields[name] = fields[name] + b"0"
    with pytest.raises(SignatureError, match=r"^bad signature: the batch was changed"):
        Keyring([NEW]).verify_batch("default", fields)


def test_adding_or_removing_a_field_or_moving_queues_breaks_the_signature() -> None:
    keyring = Keyring([NEW])
    added = {**signed(), b"r": b"1", b"x": b"[0,1]"}  # made into a retry entry
    removed = {k: v for k, v in signed().items() if k != b"o"}  # its timeout dropped
    for fields in (added, removed):
        with pytest.raises(SignatureError, match="changed after it was signed"):
            keyring.verify_batch("default", fields)
    with pytest.raises(SignatureError, match="moved from another queue"):
        keyring.verify_batch("other", signed())


def test_unsigned_and_malformed_signatures_say_so() -> None:
    keyring = Keyring([NEW])
    unsigned = wire(entry().fields())
    with pytest.raises(SignatureError, match=r"^bad signature: the batch is not signed"):
        keyring.verify_batch("default", unsigned)
    for bad in (b"junk", b"2:abcd:00", b"1:" + keyring.key_id.encode() + b":zz"):
        with pytest.raises(SignatureError, match=r"^bad signature"):
            keyring.verify_batch("default", {**unsigned, b"g": bad})


def test_a_batch_signed_with_another_secret_names_its_key() -> None:
    with pytest.raises(SignatureError, match=r"signed with key '[0-9a-f]{8}', which is not one"):
        Keyring([NEW]).verify_batch("default", signed(Keyring([OLD])))


def test_rotation_signs_with_the_first_secret_and_accepts_any() -> None:
    during = Keyring([NEW, OLD])
    during.verify_batch("default", signed(Keyring([OLD])))  # in flight before the rotation
    during.verify_batch("default", signed(Keyring([NEW])))
    Keyring([NEW]).verify_batch("default", signed(during))  # after: the new one alone
    assert during.key_id == Keyring([NEW]).key_id != Keyring([OLD]).key_id


def test_results_are_bound_to_job_field_and_codec() -> None:
    keyring = Keyring([NEW])
    result = encode_result(30, 2, 0, [JSON.dumps([[1, 4], [], []])])
    sealed = keyring.seal_result("job1", "3", "json", result)
    assert keyring.open_result(sealed, "job1", 3, "json", "w") == result
    for job, field, codec in (("job2", "3", "json"), ("job1", "4", "json"),
                              ("job1", "3.1", "json"), ("job1", "3", "pickle")):  # fmt: skip
        with pytest.raises(SignatureError, match=r"^w: bad signature on the result"):
            keyring.open_result(sealed, job, field, codec, "w")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SignatureError, match="bad signature on the result"):
        keyring.open_result(tampered, "job1", "3", "json", "w")
    with pytest.raises(SignatureError, match=r"^w: the result is not signed"):
        keyring.open_result(result, "job1", "3", "json", "w")
    with pytest.raises(SignatureError, match="not one of this producer's secrets"):
        Keyring([OLD]).open_result(sealed, "job1", "3", "json", "w")
    # A reader without a keyring drops the envelope unchecked.
    assert sign_result.open_result(None, sealed, "job1", "3", "json", "w") == result
    assert sign_result.open_result(None, result, "job1", "3", "json", "w") == result


def test_meta_signatures_cover_what_a_retry_would_run() -> None:
    keyring = Keyring([NEW])
    meta = {"id": "j1", "queue": "default", "fn": "m:f", "codec": "json", "mode": "1",
            "chunksize": 0, "options": "{}", "total": 5}  # fmt: skip
    raw = wire({**meta, "sig": keyring.sign_meta(meta)})
    keyring.verify_meta(raw, "job j1")
    Keyring([OLD, NEW]).verify_meta(raw, "job j1")
    raw[b"total"] = b"99"  # counters are not covered: nodes move them
    keyring.verify_meta(raw, "job j1")
    for name, value in ((b"fn", b"os:system"), (b"codec", b"pickle"), (b"queue", b"q2")):
        with pytest.raises(SignatureError, match=r"^job j1: bad signature on the job's meta"):
            keyring.verify_meta({**raw, name: value}, "job j1")
    with pytest.raises(SignatureError, match="meta is not signed"):
        keyring.verify_meta({k: v for k, v in raw.items() if k != b"sig"}, "job j1")


def test_keyrings_never_show_a_secret() -> None:
    keyring = Keyring([NEW, OLD])
    assert NEW not in repr(keyring) and keyring.key_id in repr(keyring)
    assert NEW not in repr(Settings(secrets=(NEW,)))


def test_secrets_must_be_long_enough() -> None:
    with pytest.raises(ConfigError, match="at least 16 bytes long, got one of 5"):
        Keyring(["short"])
    with pytest.raises(ConfigError, match="at least one secret"):
        Keyring([])
    assert Keyring.of(None) is None and Keyring.of([]) is None
    assert Keyring.of(NEW) is not None and Keyring.of(Keyring([NEW])) is not None


def test_secret_files_hold_one_secret_per_line(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(f"\n{NEW}\n  {OLD}  \n\n")
    assert secret.read_secret_file(str(path)) == (NEW, OLD)
    path.write_text("\n\n")
    with pytest.raises(ConfigError, match=f"secret file {path}: holds no secret"):
        secret.read_secret_file(str(path))
    path.write_text(f"{NEW}\ntooshort\n")
    with pytest.raises(ConfigError, match="secret 2: a secret must be at least 16 bytes"):
        secret.read_secret_file(str(path))
    with pytest.raises(ConfigError, match="cannot read: No such file"):
        secret.read_secret_file(str(tmp_path / "missing"))


def test_settings_read_secrets_from_the_environment_without_showing_them(
    tmp_path: Path,
) -> None:
    assert Settings.from_env({"TASKFAN_SECRET": f"{NEW},{OLD}"}).secrets == (NEW, OLD)
    path = tmp_path / "secret"
    path.write_text(NEW)
    assert Settings.from_env({"TASKFAN_SECRET_FILE": str(path)}).secrets == (NEW,)
    with pytest.raises(ConfigError, match="not both"):
        Settings.from_env({"TASKFAN_SECRET": NEW, "TASKFAN_SECRET_FILE": str(path)})
    with pytest.raises(ConfigError, match=r"TASKFAN_SECRET=\*\*\*: a secret must be") as info:
        Settings.from_env({"TASKFAN_SECRET": "hunter2-short"})
    assert "hunter2" not in str(info.value)


def test_changing_or_removing_the_initializer_breaks_the_signature() -> None:
    """A job's initializer runs code on every node: it is signed like the function."""
    keyring = Keyring([NEW])
    with_init = entry(initializer="tests.init_calls:init", initargs=JSON.dumps(["x"]))
    fields = wire(keyring.sign_batch("default", with_init.fields()))
    keyring.verify_batch("default", fields)
    changed = {**fields, b"i": b"os:system"}
    args = {**fields, b"ia": JSON.dumps(["rm -rf /"])}
    removed = {k: v for k, v in fields.items() if k not in (b"i", b"ia")}
    for bad in (changed, args, removed):
        with pytest.raises(SignatureError, match="changed after it was signed"):
            keyring.verify_batch("default", bad)
