"""The user-code boundary: where taskfan runs a user's code, or decodes a user's data.

A task may raise anything, not only an Exception: ``sys.exit()`` raises
SystemExit, and KeyboardInterrupt, GeneratorExit or a BaseException class of
its own are as easy to raise. So may whatever a user's value runs when it is
pickled (``__reduce__``) or unpickled (``__setstate__``, a constructor), and an
exception's own ``__str__`` and ``__repr__``. Caught with ``except Exception``,
any of these would end the process that ran it: a node, and then every node
that reclaimed the batch.

So code that calls into a user's code or data catches ``BaseException`` there
and turns what it caught into data with ``describe``, which never raises,
whatever the exception does. ``tests/test_boundary.py`` checks that no
``except Exception`` guards such a call. In a pool process, which ignores
SIGINT, and in a node, which handles it, a KeyboardInterrupt can only come from
the user's code: it is caught like the rest. A reader (``Job``, the CLI) lets a
KeyboardInterrupt through in its main thread (``reraise_interrupt``): there it
may be the user's Ctrl-C.
"""

from __future__ import annotations

import threading
import traceback
from typing import NamedTuple


class Failure(NamedTuple):
    """An exception as plain text: what survives any trip and any reader."""

    type: str  #: the exception's class name (``__qualname__``)
    message: str  #: ``str(exc)``, or a note saying why it could not be had
    traceback: str  #: the formatted traceback, as ``traceback.format_exception`` gives


def type_name(exc: BaseException) -> str:
    """The class name of ``exc``; a name that is not a string is replaced."""
    name = getattr(type(exc), "__qualname__", None)
    return name if isinstance(name, str) else "BaseException"


def message(exc: BaseException) -> str:
    """``str(exc)``; when its ``__str__`` raises (anything), a note naming what it raised."""
    try:
        text = str(exc)
    except BaseException as inner:  # the exception's own __str__ ran: anything goes
        return f"<exception str() failed: {type_name(inner)}>"
    return text if type(text) is str else "<exception str() returned a non-string>"


def format_traceback(exc: BaseException) -> str:
    """The traceback text of ``exc`` (its chain included); never raises.

    ``traceback`` itself survives an ``__str__`` that raises an Exception, not
    one that raises SystemExit, and it calls ``__repr__`` nowhere we rely on.
    """
    try:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:  # a __str__ in the chain raised what traceback lets through
        pass
    try:
        frames = "".join(traceback.format_tb(exc.__traceback__))
    except BaseException:
        frames = ""
    return f"Traceback (most recent call last):\n{frames}{type_name(exc)}: {message(exc)}\n"


def brief(exc: BaseException) -> str:
    """``exc`` in one line for a message: ``str(exc)``, or its type when that is
    empty or cannot be had; never raises."""
    text = message(exc)
    if not text or text.startswith("<exception str()"):
        return f"{type_name(exc)}{' ' + text if text else ''}"
    return text


def describe(exc: BaseException) -> Failure:
    """``exc`` as plain text; never raises, whatever ``exc`` does."""
    return Failure(type_name(exc), message(exc), format_traceback(exc))


def reraise_interrupt(exc: BaseException) -> None:
    """For readers: re-raise a KeyboardInterrupt caught in the main thread (the
    user's Ctrl-C lands there), else return. In any other thread only the user's
    code can have raised it: it is data like the rest."""
    if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
        raise exc
