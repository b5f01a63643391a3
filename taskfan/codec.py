"""Codecs turn Python values into bytes for Redis and back.

``pickle`` (protocol 5) carries any picklable value and exceptions themselves; it
runs code when it loads, so only use it with a Redis you trust or with signing.
``json`` carries standard JSON values only (tuples arrive as lists; NaN and
infinities are refused, since other JSON tools reject them) and never runs code:
use it for jobs enqueued from the shell and wherever pickle is not allowed.
"""

from __future__ import annotations

import io
import json
import pickle
import types
from typing import Any, Protocol

from taskfan.boundary import brief, reraise_interrupt
from taskfan.errors import ConfigError, EncodeError


class Codec(Protocol):
    name: str
    #: whether exception objects survive a round trip
    carries_exceptions: bool

    def dumps(self, value: Any) -> bytes: ...

    def dumps_portable(self, value: Any) -> tuple[bytes, bool]:
        """The encoding, and whether any reader can decode it: True when it names
        no class or function outside the standard types and taskfan's own, so
        that decoding it runs no code of the user's and imports nothing a
        reader may lack."""
        ...

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

    def dumps_portable(self, value: Any) -> tuple[bytes, bool]:
        buffer = io.BytesIO()
        pickler = _PortablePickler(buffer, protocol=5)
        try:
            pickler.dump(value)
        except BaseException as exc:  # as in dumps
            reraise_interrupt(exc)
            raise EncodeError(f"cannot pickle {type(value).__name__}: {brief(exc)}") from exc
        return buffer.getvalue(), pickler.portable

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


#: modules whose classes and functions every reader can import, and whose
#: objects unpickle without running a user's code (taskfan's own errors included)
PORTABLE_MODULES = frozenset(
    {"builtins", "collections", "datetime", "decimal", "fractions", "uuid"}
)


def _portable_module(module: Any) -> bool:
    return isinstance(module, str) and (
        module in PORTABLE_MODULES or module == "taskfan" or module.startswith("taskfan.")
    )


class _PortablePickler(pickle.Pickler):
    """A pickler that notes whether what it pickled names anything a reader may
    not have. The C pickler calls ``reducer_override`` only for objects that are
    not of the built-in types (int, float, str, bytes, list, tuple, dict, set,
    None, bool): plain data costs nothing extra."""

    portable = True

    def reducer_override(self, obj: Any) -> Any:
        if self.portable:
            named = (
                obj
                if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType))
                else type(obj)
            )
            self.portable = _portable_module(getattr(named, "__module__", None))
        return NotImplemented


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

    def dumps_portable(self, value: Any) -> tuple[bytes, bool]:
        return self.dumps(value), True  # JSON values are plain data

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
