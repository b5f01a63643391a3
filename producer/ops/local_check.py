"""Checking a function reference where the command runs, before a job starts.

``run``'s local worker imports from the same folders, so there a reference that
does not resolve stops the command. ``enqueue`` leaves importing to the nodes
(a producer need not have the task package), but when the module does import
here, a name it lacks is a typo that would fail every item: that stops it too.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from taskfan.refs import reference, resolve

log = logging.getLogger(__name__)


@contextlib.contextmanager
def on_path(paths: Sequence[str]) -> Iterator[None]:
    """``paths`` (as a node's ``--path``) in front of ``sys.path`` for a while."""
    added = [p for p in dict.fromkeys(os.path.abspath(p) for p in paths) if p not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for path in added:
            sys.path.remove(path)


def check_importable(function: str, paths: Sequence[str] = (".",)) -> None:
    """Raise FunctionReferenceError unless ``function`` resolves from ``paths``."""
    ref = reference(function)
    with on_path(paths):
        resolve(ref)


def check_if_importable(function: str, paths: Sequence[str] = (".",)) -> None:
    """Raise FunctionReferenceError when ``function``'s module imports here but
    does not lead to a function; a module that does not import is the nodes' affair."""
    ref = reference(function)
    module_name = ref.partition(":")[0]
    with on_path(paths):
        try:
            importlib.import_module(module_name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # the module's own code: anything, even SystemExit
            log.debug("not checking %s here: its module does not import: %r", ref, exc)
            return
        resolve(ref)
