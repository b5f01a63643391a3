"""Result entry signatures: ``b"TFS1" | key id (8 ASCII) | mac (32 bytes) | entry``.

The MAC covers the job id, the results field (the batch index, or
``"<index>.<round>"``), the codec and the entry's bytes, so a result cannot be
moved to another batch or job, nor read with another codec.
"""

from __future__ import annotations

import hashlib
import hmac

from taskfan.errors import SignatureError
from taskfan.macs import Keys, new_mac, update
from taskfan.secret import KEY_ID_LENGTH

SIGNED_RESULT = b"TFS1"
_MAC_SIZE = hashlib.sha256().digest_size
_RESULT_HEAD = len(SIGNED_RESULT) + KEY_ID_LENGTH + _MAC_SIZE

_RESULT_DOMAIN = b"taskfan result v1\x00"


class ResultSigning(Keys):
    """A keyring's result part: nodes seal result entries, readers open them."""

    @staticmethod
    def _result_mac(secret: bytes, job_id: str, field: str, codec: str, entry: bytes) -> bytes:
        mac = new_mac(secret, _RESULT_DOMAIN)
        update(mac, [job_id.encode("utf-8"), field.encode("utf-8"), codec.encode("utf-8")])
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


def open_result(
    keyring: ResultSigning | None,
    data: bytes,
    job_id: str,
    field: int | str,
    codec: str,
    where: str,
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
