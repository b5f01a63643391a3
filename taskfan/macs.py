"""What every signature shares: the keys a keyring holds and the canonical MAC
input (each part length-prefixed, field values as redis-py sends them).

``Keys`` is the base of the signing parts of ``taskfan.signing.Keyring``
(``sign_batch``, ``sign_result``, ``sign_meta``): it signs with the first
secret and accepts any, so a secret can be rotated.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from taskfan.errors import ConfigError
from taskfan.secret import check_secret, key_id

#: signing version of batch entries and job meta
VERSION = b"2"
_LENGTH = struct.Struct(">Q")


def field_bytes(value: Any) -> bytes:
    """A field value as redis-py sends it (and as it comes back)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode("ascii")
    raise TypeError(f"cannot sign a field value of type {type(value).__name__}")


def update(mac: hmac.HMAC, parts: Iterable[bytes]) -> None:
    """Feed ``parts`` to ``mac``, each after its length: no two lists feed the same bytes."""
    for part in parts:
        mac.update(_LENGTH.pack(len(part)))
        mac.update(part)


def new_mac(secret: bytes, domain: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 started with ``domain``, so no signature passes for another kind."""
    return hmac.new(secret, domain, hashlib.sha256)


class Keys:
    """One or more shared secrets: signs with the first, accepts any."""

    def __init__(self, secrets: Sequence[str | bytes]) -> None:
        if not secrets:
            raise ConfigError("a keyring needs at least one secret")
        self._keys: list[tuple[str, bytes]] = []
        for secret in secrets:
            raw = check_secret(secret)
            self._keys.append((key_id(raw), raw))
        self.key_id, self._signing_key = self._keys[0]

    def __repr__(self) -> str:  # never show a secret
        return f"<Keyring signing with key {self.key_id}, {len(self._keys)} key(s)>"

    @property
    def key_ids(self) -> list[str]:
        return [kid for kid, _ in self._keys]

    def _candidates(self, kid: str) -> list[bytes]:
        return [secret for k, secret in self._keys if k == kid]
