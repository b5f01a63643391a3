"""Callables that carry state: how a batch entry names more than a plain function.

A plain function travels by reference alone (``taskfan.refs``). Other callables
travel as the reference of the function actually called (the entry's ``f``,
which ``--allow``, costs and metrics see) plus a *wrap* (field ``w``) saying how
the node builds the callable from it, with its bound state (field ``v``):

``partial``
    ``functools.partial(f, *args, **kwargs)``; ``v`` is the codec's encoding of
    ``[args, kwargs]`` (with the json codec, JSON arguments only).
``method``
    ``f`` bound to an object: a bound method (``f`` is ``module:Class.method``)
    or a callable instance (``module:Class.__call__``), maybe under a partial;
    ``v`` is the codec's encoding of ``[object, args, kwargs]`` (pickle only).
``value``
    a function sent by value (lambdas, closures, functions of ``__main__``), opt-in
    (``Client(by_value=True)``); ``v`` is its cloudpickle, ``f`` a name for it that
    nobody imports. Code shipped through Redis: refused by ``--no-pickle`` nodes and
    by nodes with an allowlist unless they pass ``--allow-by-value``
    (docs/security.md).

A node checks ``f`` against its allowlist before it imports anything, and decodes
``v`` only after the function resolved (so an allowlisted module is imported
first) and only with a codec it accepts. Both fields are covered by the batch
signature (every field is) and, in the job's meta (``wrap``, ``bound``), by
the meta signature.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable
from typing import Any

from taskfan.errors import BoundStateError

PARTIAL = "partial"
METHOD = "method"
VALUE = "value"
WRAPS = (PARTIAL, METHOD, VALUE)


def unpack_state(wrap: str, state: Any) -> tuple[tuple[Any, ...], tuple[Any, ...], dict[str, Any]]:
    """(bound object, or nothing; args; kwargs) from a decoded ``v``; raises
    BoundStateError when it is not what ``wrap`` says."""
    size = 3 if wrap == METHOD else 2
    if not isinstance(state, (list, tuple)) or len(state) != size:
        raise BoundStateError(f"the bound state of a {wrap} is not a list of {size}")
    head, (args, kwargs) = tuple(state[: size - 2]), state[size - 2 :]
    if not isinstance(args, (list, tuple)):
        raise BoundStateError(f"the arguments bound by a {wrap} are not a list")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise BoundStateError(f"the keywords bound by a {wrap} are not a dict of names")
    return head, tuple(args), kwargs


def bind(fn: Callable[..., Any], wrap: str, state: Any) -> Callable[..., Any]:
    """The callable a ``partial`` or ``method`` entry calls: ``fn`` with its state."""
    head, args, kwargs = unpack_state(wrap, state)
    if not head and not args and not kwargs:
        return fn
    return functools.partial(fn, *head, *args, **kwargs)


def load_by_value(blob: bytes) -> Callable[..., Any]:
    """The function a ``value`` entry ships (unpickling it runs code: the node's
    guard decided it may); BoundStateError saying what is missing."""
    try:
        fn = pickle.loads(blob)
    except ModuleNotFoundError as exc:
        hint = (
            " (install cloudpickle on the node: taskfan's byvalue extra, or "
            "pip install cloudpickle)"
            if exc.name and exc.name.startswith("cloudpickle")
            else " (the function uses a module this node cannot import)"
        )
        raise BoundStateError(f"cannot load a function sent by value: {exc}{hint}") from exc
    if not callable(fn):
        raise BoundStateError(f"a function sent by value is a {type(fn).__name__}, not callable")
    return fn
