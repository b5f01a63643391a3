"""Batch entry signatures: a field ``g = "2:<key id>:<hex mac>"``.

The MAC covers the queue name and every other field of the entry (job id,
batch index, start, count, function, codec, mode, chunksize, options, retry
round and offsets, payload, issue time ``t`` and job nonce ``u``, and any field
a later version adds), canonically serialised: sorted by name, each name and
value length-prefixed. So no field can be changed, added or removed, and the
entry cannot be moved to another queue. Version 1 entries (no issue time) are
refused; replays of a valid entry are bounded by ``worker.core.entry_checks``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from taskfan.errors import SignatureError
from taskfan.macs import VERSION, Keys, field_bytes, new_mac, update

#: batch entry field that holds the signature
SIGNATURE_FIELD = b"g"

_BATCH_DOMAIN = b"taskfan batch v1\x00"


class BatchSigning(Keys):
    """A keyring's batch part: producers sign entries, nodes verify them."""

    @staticmethod
    def _batch_mac(secret: bytes, queue: str, fields: Mapping[bytes, bytes]) -> bytes:
        mac = new_mac(secret, _BATCH_DOMAIN)
        parts = [queue.encode("utf-8")]
        for name in sorted(n for n in fields if n != SIGNATURE_FIELD):
            parts += [name, fields[name]]
        update(mac, parts)
        return mac.digest()

    def sign_batch(self, queue: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The entry's fields with the signature field added."""
        raw = {name.encode("utf-8"): field_bytes(value) for name, value in fields.items()}
        digest = self._batch_mac(self._signing_key, queue, raw)
        signature = b":".join([VERSION, self.key_id.encode(), digest.hex().encode()])
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
        if len(parts) != 3 or parts[0] != VERSION:
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
