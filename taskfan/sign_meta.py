"""Job meta signatures: what a retry round would run again, the sealed totals,
and each retry round.

- ``sig`` covers the id, queue, function, codec, mode, chunksize, options, and
  for a callable with bound state its ``wrap``, ``bound`` and ``label`` (and an
  initializer's ``init``, ``initargs``), and the job's ``nonce``, so
  ``Job.retry_failed`` never signs what someone else wrote into the meta hash;
- ``tsig``, written when the job is sealed, covers its ``batches`` and ``total``
  (the signed values in clear too, so a reader names the field that changed);
- ``rsig:<n>`` per retry round covers ``round:<n>``.

Readers with a keyring check all three (``verify_job``).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from taskfan.errors import SignatureError
from taskfan.macs import VERSION, Keys, field_bytes, new_mac, update

#: job meta field that holds the signature
META_SIGNATURE_FIELD = b"sig"
#: the meta fields the meta signature covers (version 1: without the nonce)
META_SIGNED_V1 = (b"id", b"queue", b"fn", b"codec", b"mode", b"chunksize", b"options")
META_SIGNED = (*META_SIGNED_V1, b"nonce")
#: meta fields of a job whose callable carries bound state (taskfan.callables):
#: signed after META_SIGNED when the meta has any of them, so the signature of
#: a meta without them is what it always was
META_SIGNED_CALLABLE = (b"wrap", b"bound", b"label")
#: meta fields of a job with an initializer (worker.pool.process_setup): signed after the
#: others when the meta has any of them
META_SIGNED_INIT = (b"init", b"initargs")
#: job meta field that holds the signature of the sealed totals
TOTALS_SIGNATURE_FIELD = b"tsig"
#: the meta fields the totals signature covers, in its order
TOTALS_SIGNED = (b"batches", b"total")

_META_DOMAIN = b"taskfan meta v1\x00"
_TOTALS_DOMAIN = b"taskfan totals v1\x00"
_ROUND_DOMAIN = b"taskfan round v1\x00"


class MetaSigning(Keys):
    """A keyring's job meta part: identity, sealed totals, retry rounds."""

    @staticmethod
    def _meta_mac(secret: bytes, meta: Mapping[bytes, bytes], version: bytes = VERSION) -> bytes:
        mac = new_mac(secret, _META_DOMAIN)
        names = META_SIGNED_V1 if version == b"1" else META_SIGNED
        if version != b"1" and any(name in meta for name in META_SIGNED_CALLABLE):
            names = (*names, *META_SIGNED_CALLABLE)
        if version != b"1" and any(name in meta for name in META_SIGNED_INIT):
            names = (*names, *META_SIGNED_INIT)
        update(mac, [meta.get(name, b"") for name in names])
        return mac.digest()

    def sign_meta(self, meta: Mapping[str, Any]) -> str:
        """The value of the meta hash's ``sig`` field."""
        raw = {name.encode("utf-8"): field_bytes(value) for name, value in meta.items()}
        digest = self._meta_mac(self._signing_key, raw)
        return f"{VERSION.decode()}:{self.key_id}:{digest.hex()}"

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

    def _values_mac(self, secret: bytes, domain: bytes, values: Sequence[bytes]) -> bytes:
        mac = new_mac(secret, domain)
        update(mac, values)
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
