"""What a producer sends for a callable: a reference, maybe a wrap and bound state.

``describe`` turns what ``Client.map``, ``Client.submit`` and the ``Executor``
are given into a ``Described``: the reference of the function actually called
(``f``: what ``--allow``, costs and metrics see), and for a ``functools.partial``,
a bound method, a callable instance, the wrap and its state, encoded with the
job's codec (``taskfan.callables``). Static methods and class methods are plain
references. A lambda, a closure, or (with ``by_value``) a function of
``__main__`` is sent by value with cloudpickle when the client opted in, and
refused with the fix otherwise.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from taskfan import boundary
from taskfan.callables import METHOD, PARTIAL, VALUE
from taskfan.codec import Codec
from taskfan.errors import EncodeError, FunctionReferenceError
from taskfan.refs import MAX_REF_LENGTH, reference

#: longest label shown for a callable (status, inspect, the dashboard)
MAX_LABEL = 200


def _shown(value: Any) -> str:
    """A bound argument as a label shows it: numbers, booleans and None as
    themselves, anything else by its type only, since status and the dashboard
    are read by more people than the job's data (a bound string may be a token)."""
    if value is None or type(value) in (bool, int, float):
        text = repr(value)
        return text if len(text) <= 24 else text[:20] + "..."
    return f"<{type(value).__name__}>"


BY_VALUE_FIX = (
    "send it by value: "
    "Client(..., by_value=True) or Executor(..., by_value=True) (pip install "
    "cloudpickle; nodes with --no-pickle refuse it, and so do nodes with an "
    "--allow list unless they pass --allow-by-value: docs/security.md)"
)


@dataclass(frozen=True)
class Described:
    """A callable as it travels: ``fn_ref`` (the function called), ``wrap`` and
    ``bound`` (empty for a plain function), ``label`` (what people read)."""

    fn_ref: str
    wrap: str = ""
    bound: bytes = b""
    label: str = ""

    @property
    def shown(self) -> str:
        return self.label or self.fn_ref


def describe(fn: Callable[..., Any] | str, codec: Codec, by_value: bool = False) -> Described:
    """How ``fn`` travels with ``codec``; FunctionReferenceError or EncodeError
    with the fix when it cannot."""
    if isinstance(fn, str):
        return Described(reference(fn))
    if by_value and getattr(_target(fn), "__module__", None) == "__main__":
        return _by_value(fn, codec)
    try:
        ref, head, args, kwargs, label = _parts(fn)
    except FunctionReferenceError as exc:
        if not by_value:
            raise FunctionReferenceError(f"{exc}; or {BY_VALUE_FIX}") from None
        return _by_value(fn, codec)
    if not head and not args and not kwargs:
        return Described(ref, label=label if label != ref else "")
    wrap = METHOD if head else PARTIAL
    if wrap == METHOD and codec.name != "pickle":
        raise EncodeError(
            f"{label}: a bound method or callable instance travels with its object "
            f"pickled, and this job uses the {codec.name} codec: use the pickle codec, "
            "or pass a module-level function"
        )
    state = [*head, list(args), dict(kwargs)]
    try:
        bound = codec.dumps(state)
    except EncodeError as exc:
        raise EncodeError(
            f"{label}: its bound arguments cannot be encoded with the {codec.name} codec: {exc}"
        ) from None
    return Described(ref, wrap, bound, label)


def _target(fn: Any) -> Any:
    """The function a partial or bound method calls in the end."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__func__", fn)


def _parts(
    fn: Any,
) -> tuple[str, tuple[Any, ...], tuple[Any, ...], dict[str, Any], str]:
    """(reference, bound object or nothing, args, kwargs, label)."""
    if isinstance(fn, functools.partial):
        ref, head, args, kwargs, inner = _parts(fn.func)
        args = (*args, *fn.args)
        kwargs = {**kwargs, **fn.keywords}
        shown = [_shown(a) for a in fn.args] + [f"{k}={_shown(v)}" for k, v in fn.keywords.items()]
        return ref, head, args, kwargs, _cut(f"partial({', '.join([inner, *shown])})")
    if inspect.ismethod(fn) and not isinstance(fn.__self__, type):
        ref = reference(fn.__func__)
        return ref, (fn.__self__,), (), {}, ref
    if (
        callable(fn)
        and not isinstance(fn, type)
        and not inspect.isroutine(fn)
        and not hasattr(fn, "__qualname__")
    ):
        call = inspect.getattr_static(type(fn), "__call__", None)
        if not inspect.isfunction(call):
            raise FunctionReferenceError(f"{fn!r} is not a function, nor an instance of a class")
        ref = reference(call)
        module, _, qualname = ref.partition(":")
        owner = qualname.rpartition(".")[0] or qualname
        return ref, (fn,), (), {}, f"{module}:{owner}(...).__call__"
    ref = reference(fn)
    return ref, (), (), {}, ref


def _cut(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 4] + "...)"


def _by_value(fn: Callable[..., Any], codec: Codec) -> Described:
    """``fn`` pickled by value with cloudpickle (the job's codec must be pickle)."""
    if codec.name != "pickle":
        raise EncodeError(
            f"{fn!r}: a function sent by value is pickled code, and this job uses the "
            f"{codec.name} codec: use the pickle codec, or pass a module-level function"
        )
    try:
        import cloudpickle  # type: ignore[import-untyped]  # opt-in: taskfan[byvalue]
    except ImportError:
        raise FunctionReferenceError(
            "sending a function by value (by_value=True) needs cloudpickle: "
            "taskfan's byvalue extra, or pip install cloudpickle"
        ) from None
    try:
        blob = cloudpickle.dumps(fn)
    except BaseException as exc:  # its reducers ran: anything may come out
        if not isinstance(exc, Exception):
            raise
        raise EncodeError(f"{fn!r} cannot be pickled by value: {boundary.brief(exc)}") from None
    target = _target(fn)
    module = getattr(target, "__module__", None) or "__main__"
    qualname = getattr(target, "__qualname__", None) or type(target).__name__
    ref = f"{_ident(module)}:{_ident(qualname)}"[:MAX_REF_LENGTH].rstrip(".")
    return Described(ref, VALUE, blob, _cut(f"{ref} (by value)"))


def _ident(dotted: str) -> str:
    """``dotted`` as identifiers: ``f.<locals>.<lambda>`` becomes ``f.locals.lambda``."""
    parts = ["".join(c if c.isalnum() or c == "_" else "" for c in p) for p in dotted.split(".")]
    return ".".join(p if p.isidentifier() else f"_{p}" for p in parts if p) or "_"
