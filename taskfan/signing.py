"""Signing with a shared secret: HMAC-SHA256 over batches, results and job meta.

Anyone who can write to Redis can add a batch entry, and a node runs what a
batch names (and, with the pickle codec, unpickling alone runs code). With a
secret (``TASKFAN_SECRET``, ``--secret-file``), producers sign every batch and
nodes run only batches whose signature checks out; nodes sign every result
entry and producers accept only results whose signature checks out. Every
check happens on the raw bytes, before anything is decoded or imported.

What is signed:

- **Batch entries** get a field ``g = "2:<key id>:<hex mac>"``. The MAC covers
  the queue name and every other field of the entry (job id, batch index,
  start, count, function, codec, mode, chunksize, options, retry round and
  offsets, payload, issue time ``t`` and job nonce ``u``, and any field a later
  version adds), canonically serialised: sorted by name, each name and value
  length-prefixed. So no field can be changed, added or removed, and the entry
  cannot be moved to another queue. A copy of a signed entry is still valid
  (replay), so nodes bound replays with the signed issue time and nonce (see
  ``worker.guard``). Version 1 entries (no issue time) are refused.
- **Result entries** are wrapped: ``b"TFS1" | key id (8 ASCII) | mac (32 bytes)
  | entry``. The MAC covers the job id, the results field (the batch index, or
  ``"<index>.<round>"``), the codec and the entry's bytes, so a result cannot
  be moved to another batch or job, nor read with another codec.
- **Job meta**: a field ``sig`` over what a retry round would run again (id,
  queue, function, codec, mode, chunksize, options, and for a callable with
  bound state its ``wrap``, ``bound`` and ``label``) and the job's ``nonce``, so
  ``Job.retry_failed`` never signs what someone else wrote into the meta hash;
  ``tsig``, written when the job is sealed, over its ``batches`` and ``total``
  (the signed values in clear too, so a reader names the field that changed);
  and ``rsig:<n>`` per retry round over ``round:<n>``. Readers with a keyring
  check all three (``verify_job``).

Key ids are the first 8 hex digits of ``HMAC(secret, "taskfan key id")``: they
name a secret without revealing it. A keyring holds one or more secrets: it
signs with the first and accepts any, so a secret can be rotated (see
docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from taskfan.errors import ConfigError, SignatureError

#: batch entry field that holds the signature
SIGNATURE_FIELD = b"g"
#: job meta field that holds the signature
META_SIGNATURE_FIELD = b"sig"
#: the meta fields the meta signature covers (version 1: without the nonce)
META_SIGNED_V1 = (b"id", b"queue", b"fn", b"codec", b"mode", b"chunksize", b"options")
META_SIGNED = (*META_SIGNED_V1, b"nonce")
#: meta fields of a job whose callable carries bound state (taskfan.callables):
#: signed after META_SIGNED when the meta has any of them, so the signature of
#: a meta without them is what it always was
META_SIGNED_CALLABLE = (b"wrap", b"bound", b"label")
#: meta fields of a job with an initializer (worker.setup): signed after the
#: others when the meta has any of them
META_SIGNED_INIT = (b"init", b"initargs")
#: job meta field that holds the signature of the sealed totals
TOTALS_SIGNATURE_FIELD = b"tsig"
#: the meta fields the totals signature covers, in its order
TOTALS_SIGNED = (b"batches", b"total")
SIGNED_RESULT = b"TFS1"
KEY_ID_LENGTH = 8
_MAC_SIZE = hashlib.sha256().digest_size
_RESULT_HEAD = len(SIGNED_RESULT) + KEY_ID_LENGTH + _MAC_SIZE
_VERSION = b"2"
_LENGTH = struct.Struct(">Q")
#: shortest secret accepted: shorter ones can be guessed offline from signed entries
MIN_SECRET_LENGTH = 16

_BATCH_DOMAIN = b"taskfan batch v1\x00"
_RESULT_DOMAIN = b"taskfan result v1\x00"
_META_DOMAIN = b"taskfan meta v1\x00"
_TOTALS_DOMAIN = b"taskfan totals v1\x00"
_ROUND_DOMAIN = b"taskfan round v1\x00"


def _bytes(value: Any) -> bytes:
    """A field value as redis-py sends it (and as it comes back)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode("ascii")
    raise TypeError(f"cannot sign a field value of type {type(value).__name__}")


def _update(mac: Any, parts: Iterable[bytes]) -> None:
    for part in parts:
        mac.update(_LENGTH.pack(len(part)))
        mac.update(part)


def key_id(secret: bytes) -> str:
    return hmac.new(secret, b"taskfan key id", hashlib.sha256).hexdigest()[:KEY_ID_LENGTH]


def check_secret(secret: str | bytes) -> bytes:
    """The secret as bytes; ConfigError (never showing it) when it is too short."""
    raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(raw) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"a secret must be at least {MIN_SECRET_LENGTH} bytes long, got one of {len(raw)}: "
            "make one with: python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return raw


class Keyring:
    """One or more shared secrets: signs with the first, accepts any."""

    def __init__(self, secrets: Sequence[str | bytes]) -> None:
        if not secrets:
            raise ConfigError("a keyring needs at least one secret")
        self._keys: list[tuple[str, bytes]] = []
        for secret in secrets:
            raw = check_secret(secret)
            self._keys.append((key_id(raw), raw))
        self.key_id, self._signing_key = self._keys[0]

    @classmethod
    def of(cls, secrets: Keyring | str | bytes | Sequence[str | bytes] | None) -> Keyring | None:
        """A keyring from whatever a caller passed: a keyring, a secret, a list, None."""
        if secrets is None or isinstance(secrets, Keyring):
            return secrets
        if isinstance(secrets, (str, bytes)):
            secrets = [secrets]
        return cls(secrets) if secrets else None

    def __repr__(self) -> str:  # never show a secret
        return f"<Keyring signing with key {self.key_id}, {len(self._keys)} key(s)>"

    @property
    def key_ids(self) -> list[str]:
        return [kid for kid, _ in self._keys]

    def _candidates(self, kid: str) -> list[bytes]:
        return [secret for k, secret in self._keys if k == kid]

    # ----------------------------------------------------------------- batches

    @staticmethod
    def _batch_mac(secret: bytes, queue: str, fields: Mapping[bytes, bytes]) -> bytes:
        mac = hmac.new(secret, _BATCH_DOMAIN, hashlib.sha256)
        parts = [queue.encode("utf-8")]
        for name in sorted(n for n in fields if n != SIGNATURE_FIELD):
            parts += [name, fields[name]]
        _update(mac, parts)
        return mac.digest()

    def sign_batch(self, queue: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The entry's fields with the signature field added."""
        raw = {name.encode("utf-8"): _bytes(value) for name, value in fields.items()}
        digest = self._batch_mac(self._signing_key, queue, raw)
        signature = b":".join([_VERSION, self.key_id.encode(), digest.hex().encode()])
        return {**fields, SIGNATURE_FIELD.decode(): signature}

    def verify_batch(self, queue: str, fields: Mapping[bytes, bytes]) -> None:
        """Raise SignatureError, its message starting with "bad signature", unless the
        entry is signed by one of our secrets and unchanged since."""
        signature = fields.get(SIGNATURE_FIELD)
        if signature is None:
            raise SignatureError(
                "bad signature: the batch is not signed, and this node runs only batches "
                "signed with its secret (give the producer the secret: TASKFAN_SECRET, "
                "--secret-file, or Client(..., secret=...))"
            )
        parts = signature.split(b":")
        if len(parts) == 3 and parts[0] == b"1":
            raise SignatureError(
                "bad signature: signed by a producer older than this node (signing version "
                "1 carries no issue time, so replays cannot be bounded): upgrade it"
            )
        if len(parts) != 3 or parts[0] != _VERSION:
            raise SignatureError(
                f"bad signature: field 'g' is not a taskfan signature: {signature[:80]!r}"
            )
        kid = parts[1].decode("ascii", "replace")
        secrets = self._candidates(kid)
        if not secrets:
            raise SignatureError(
                f"bad signature: signed with key {kid!r}, which is not one of this node's "
                f"secrets (keys {', '.join(self.key_ids)})"
            )
        try:
            claimed = bytes.fromhex(parts[2].decode("ascii"))
        except ValueError:
            raise SignatureError("bad signature: its MAC is not hexadecimal") from None
        for secret in secrets:
            if hmac.compare_digest(self._batch_mac(secret, queue, fields), claimed):
                return
        raise SignatureError(
            "bad signature: the batch was changed after it was signed, moved from another "
            "queue, or signed with another secret"
        )

    # ----------------------------------------------------------------- results

    @staticmethod
    def _result_mac(secret: bytes, job_id: str, field: str, codec: str, entry: bytes) -> bytes:
        mac = hmac.new(secret, _RESULT_DOMAIN, hashlib.sha256)
        _update(mac, [job_id.encode("utf-8"), field.encode("utf-8"), codec.encode("utf-8")])
        mac.update(entry)
        return mac.digest()

    def seal_result(self, job_id: str, field: int | str, codec: str, entry: bytes) -> bytes:
        """The result entry, wrapped with its signature."""
        digest = self._result_mac(self._signing_key, job_id, str(field), codec, entry)
        return b"".join([SIGNED_RESULT, self.key_id.encode("ascii"), digest, entry])

    def open_result(
        self, data: bytes, job_id: str, field: int | str, codec: str, where: str
    ) -> bytes:
        """The result entry inside ``data``; SignatureError unless we signed it for
        this job, this field and this codec."""
        if data[: len(SIGNED_RESULT)] != SIGNED_RESULT or len(data) < _RESULT_HEAD:
            raise SignatureError(
                f"{where}: the result is not signed, so it cannot be trusted: a node "
                "without the secret recorded it, a node rejected the batch (unsigned or "
                "changed: see the queue's dead-letter stream), or someone else wrote it"
            )
        start = len(SIGNED_RESULT)
        kid = data[start : start + KEY_ID_LENGTH].decode("ascii", "replace")
        claimed = data[start + KEY_ID_LENGTH : _RESULT_HEAD]
        entry = data[_RESULT_HEAD:]
        secrets = self._candidates(kid)
        if not secrets:
            raise SignatureError(
                f"{where}: the result is signed with key {kid!r}, which is not one of "
                f"this producer's secrets (keys {', '.join(self.key_ids)})"
            )
        for secret in secrets:
            expected = self._result_mac(secret, job_id, str(field), codec, entry)
            if hmac.compare_digest(expected, claimed):
                return entry
        raise SignatureError(
            f"{where}: bad signature on the result: it was changed after it was signed, "
            "moved from another batch or job, or signed with another secret"
        )

    # ----------------------------------------------------------------- job meta

    @staticmethod
    def _meta_mac(secret: bytes, meta: Mapping[bytes, bytes], version: bytes = _VERSION) -> bytes:
        mac = hmac.new(secret, _META_DOMAIN, hashlib.sha256)
        names = META_SIGNED_V1 if version == b"1" else META_SIGNED
        if version != b"1" and any(name in meta for name in META_SIGNED_CALLABLE):
            names = (*names, *META_SIGNED_CALLABLE)
        if version != b"1" and any(name in meta for name in META_SIGNED_INIT):
            names = (*names, *META_SIGNED_INIT)
        _update(mac, [meta.get(name, b"") for name in names])
        return mac.digest()

    def sign_meta(self, meta: Mapping[str, Any]) -> str:
        """The value of the meta hash's ``sig`` field."""
        raw = {name.encode("utf-8"): _bytes(value) for name, value in meta.items()}
        digest = self._meta_mac(self._signing_key, raw)
        return f"{_VERSION.decode()}:{self.key_id}:{digest.hex()}"

    def verify_meta(self, meta: Mapping[bytes, bytes], where: str) -> None:
        signature = meta.get(META_SIGNATURE_FIELD, b"")
        parts = signature.split(b":")
        if len(parts) != 3:
            raise SignatureError(
                f"{where}: the job's meta is not signed (it was enqueued without the "
                "secret), so it cannot be trusted: what it says to run, how many batches "
                "and items it has, which batches ran again"
            )
        try:
            claimed = bytes.fromhex(parts[2].decode("ascii"))
        except ValueError:
            claimed = b""
        kid = parts[1].decode("ascii", "replace")
        if not self._candidates(kid):
            raise SignatureError(
                f"{where}: the job's meta is signed with key {kid!r}, which is not one of "
                f"this producer's secrets (keys {', '.join(self.key_ids)})"
            )
        for secret in self._candidates(kid):
            if hmac.compare_digest(self._meta_mac(secret, meta, parts[0]), claimed):
                return
        raise SignatureError(
            f"{where}: bad signature on the job's meta: its id, function (or its bound "
            "state), codec, mode, options or nonce were changed, or it was signed with "
            "another secret"
        )

    # ----------------------------------------------------------------- totals, rounds

    def _values_mac(self, secret: bytes, domain: bytes, values: Sequence[bytes]) -> bytes:
        mac = hmac.new(secret, domain, hashlib.sha256)
        _update(mac, values)
        return mac.digest()

    def _sign_values(self, domain: bytes, values: Sequence[bytes]) -> str:
        digest = self._values_mac(self._signing_key, domain, values)
        return f"1:{self.key_id}:{digest.hex()}"

    def _values_hold(self, domain: bytes, signature: bytes, values: Sequence[bytes]) -> bool:
        parts = signature.split(b":")
        if len(parts) != 3 or parts[0] != b"1":
            return False
        try:
            claimed = bytes.fromhex(parts[2].decode("ascii"))
        except ValueError:
            return False
        return any(
            hmac.compare_digest(self._values_mac(secret, domain, values), claimed)
            for secret in self._candidates(parts[1].decode("ascii", "replace"))
        )

    def sign_totals(self, job_id: str, nonce: str, batches: int, total: int) -> str:
        """The meta's ``tsig`` when the job is sealed: the signed values, then the MAC."""
        values = [str(batches).encode(), str(total).encode()]
        signature = self._sign_values(_TOTALS_DOMAIN, [job_id.encode(), nonce.encode(), *values])
        return ",".join([v.decode() for v in values]) + "|" + signature

    def sign_round(self, job_id: str, nonce: str, round_: int, batches: str) -> str:
        """The meta's ``rsig:<round>``: covers ``round:<round>`` (a JSON list of batches)."""
        values = [job_id.encode(), nonce.encode(), str(round_).encode(), batches.encode()]
        return self._sign_values(_ROUND_DOMAIN, values)

    def verify_job(self, job_id: str, meta: Mapping[bytes, bytes]) -> None:
        """Raise SignatureError naming the job and the field unless the meta hash is
        the one a producer with our secret wrote for ``job_id``: identity and nonce
        (``sig``), its sealed totals (``tsig``), and each retry round (``rsig:<n>``)."""
        where = f"job {job_id} meta"
        self.verify_meta(meta, where)
        if meta.get(b"id") != job_id.encode():
            raise SignatureError(f"{where}: field 'id' names another job: the hash was copied")
        nonce = meta.get(b"nonce", b"")
        if meta.get(b"sealed") == b"1":
            self._verify_totals(job_id, nonce, meta, where)
        for name in sorted(n for n in meta if n.startswith(b"round:")):
            round_ = name[6:].decode("ascii", "replace")
            values = [job_id.encode(), nonce, round_.encode(), meta[name]]
            signature = meta.get(b"rsig:" + name[6:], b"")
            if not self._values_hold(_ROUND_DOMAIN, signature, values):
                raise SignatureError(
                    f"{where}: field 'round:{round_}' (the batches retry round {round_} ran "
                    f"again) does not match its signature 'rsig:{round_}': it was changed or "
                    "added by someone without the secret"
                )

    def _verify_totals(
        self, job_id: str, nonce: bytes, meta: Mapping[bytes, bytes], where: str
    ) -> None:
        signed = meta.get(TOTALS_SIGNATURE_FIELD, b"")
        claimed, _, signature = signed.partition(b"|")
        values = claimed.split(b",")
        if len(values) != len(TOTALS_SIGNED) or not self._values_hold(
            _TOTALS_DOMAIN, signature, [job_id.encode(), nonce, *values]
        ):
            raise SignatureError(
                f"{where}: fields 'batches' and 'total' are not signed (field 'tsig' is "
                "missing or changed): the job was sealed by a producer without the secret, "
                "or someone changed them"
            )
        for name, value in zip(TOTALS_SIGNED, values, strict=True):
            if meta.get(name) != value:
                found = meta.get(name, b"(missing)")[:40].decode("utf-8", "replace")
                raise SignatureError(
                    f"{where}: field '{name.decode()}' says {found}, but the producer sealed "
                    f"the job with {value.decode()}: someone changed it"
                )


def open_result(
    keyring: Keyring | None, data: bytes, job_id: str, field: int | str, codec: str, where: str
) -> bytes:
    """The result entry in ``data``: verified with a keyring; without one, a signed
    entry's envelope is dropped unchecked (the reader asked for no checks)."""
    if keyring is not None:
        return keyring.open_result(data, job_id, field, codec, where)
    return unverified(data)


def unverified(data: bytes) -> bytes:
    """The result entry in ``data``, its signature (if any) dropped unchecked: for
    tools that only show what Redis holds, and decode it without running code."""
    return data[_RESULT_HEAD:] if data[: len(SIGNED_RESULT)] == SIGNED_RESULT else data


#: characters a secret file may hold: a few hundred secrets, far more than rotation needs
MAX_SECRET_FILE = 64 * 1024


def read_secret_file(path: str) -> tuple[str, ...]:
    """The secrets in a file, one per line (blank lines skipped); the first signs."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read(MAX_SECRET_FILE + 1)  # not all of /dev/zero, or a wrong file
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"secret file {path}: cannot read: {reason}") from None
    if len(text) > MAX_SECRET_FILE:
        raise ConfigError(
            f"secret file {path}: longer than {MAX_SECRET_FILE} characters: not a file of secrets"
        )
    lines = text.splitlines()
    secrets = tuple(line.strip() for line in lines if line.strip())
    if not secrets:
        raise ConfigError(f"secret file {path}: holds no secret")
    for number, secret in enumerate(secrets, 1):
        try:
            check_secret(secret)
        except ConfigError as exc:
            raise ConfigError(f"secret file {path}: secret {number}: {exc}") from None
    return secrets
