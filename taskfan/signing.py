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
  ``worker.core.entry_checks``). Version 1 entries (no issue time) are refused.
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

Where it lives: ``Keyring`` (here) joins ``sign_batch`` (batch entries),
``sign_result`` (result entries; ``open_result`` and ``unverified`` for readers),
``sign_meta`` (job meta, totals, rounds), on ``macs`` (the keys and the
canonical MAC input); ``secret`` checks secrets and reads secret files.
"""

from __future__ import annotations

from collections.abc import Sequence

from taskfan.sign_batch import BatchSigning
from taskfan.sign_meta import MetaSigning
from taskfan.sign_result import ResultSigning


class Keyring(BatchSigning, ResultSigning, MetaSigning):
    """One or more shared secrets: signs with the first, accepts any."""

    @classmethod
    def of(cls, secrets: Keyring | str | bytes | Sequence[str | bytes] | None) -> Keyring | None:
        """A keyring from whatever a caller passed: a keyring, a secret, a list, None."""
        if secrets is None or isinstance(secrets, Keyring):
            return secrets
        if isinstance(secrets, (str, bytes)):
            secrets = [secrets]
        return cls(secrets) if secrets else None
