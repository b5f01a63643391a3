"""Shared secrets: checking one, naming one by its key id, reading a secret file.

A secret comes from ``TASKFAN_SECRET``, ``--secret-file`` or ``Client(...,
secret=...)``; a keyring (``taskfan.signing``) holds one or more of them. Key
ids are the first 8 hex digits of ``HMAC(secret, "taskfan key id")``: they
name a secret without revealing it.
"""

from __future__ import annotations

import hashlib
import hmac

from taskfan.errors import ConfigError

KEY_ID_LENGTH = 8
#: shortest secret accepted: shorter ones can be guessed offline from signed entries
MIN_SECRET_LENGTH = 16
#: characters a secret file may hold: a few hundred secrets, far more than rotation needs
MAX_SECRET_FILE = 64 * 1024


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
