"""Codecs turn Python values into bytes for Redis and back.

``pickle`` (protocol 5) carries any picklable value and exceptions themselves; it
runs code when it loads, so only use it with a Redis you trust or with signing.
``json`` carries standard JSON values only (tuples arrive as lists; NaN and
infinities are refused, since other JSON tools reject them) and never runs code:
use it for jobs enqueued from the shell and wherever pickle is not allowed.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol

from taskfan.boundary import brief, reraise_interrupt
from taskfan.errors import ConfigError, EncodeError


class Codec(Protocol):
    name: str
    #: whether exception objects survive a round trip
    carries_exceptions: bool

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class PickleCodec:
    name = "pickle"
    carries_exceptions = True

    def dumps(self, value: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=5)
        except BaseException as exc:  # PicklingError, TypeError, or what a __reduce__ raised
            reraise_interrupt(exc)
            raise EncodeError(f"cannot pickle {type(value).__name__}: {brief(exc)}") from exc

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


class JsonCodec:
    name = "json"
    carries_exceptions = False

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def dumps(self, value: Any) -> bytes:
        try:
            return self._encoder.encode(value).encode("utf-8")
        except BaseException as exc:  # TypeError, ..., or what a dict subclass's items() raised
            reraise_interrupt(exc)
            raise EncodeError(
                f"cannot encode {type(value).__name__} as JSON: {brief(exc)}"
            ) from exc

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


PICKLE = PickleCodec()
JSON = JsonCodec()
CODECS: dict[str, Codec] = {PICKLE.name: PICKLE, JSON.name: JSON}


def get_codec(name: str | bytes) -> Codec:
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    try:
        return CODECS[name]
    except KeyError:
        raise ConfigError(f"unknown codec {name!r}: choose one of {', '.join(CODECS)}") from None
