"""Functions travel by reference: ``"module:qualname"``.

A producer turns a function into a reference and checks, at enqueue time, that
the reference leads back to the same function; a node resolves it once per
process and caches it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from taskfan.errors import FunctionReferenceError


def _main_module_name() -> str:
    """The importable name of the script running as ``__main__``.

    ``python -m pkg.mod`` gives ``pkg.mod``. ``python path/to/script.py`` gives the
    dotted path of the script relative to the working directory when the script
    lies below it (a worker started in the same directory imports it), else the
    file's stem (start the worker with ``--path`` naming the script's folder).
    """
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        name: str = spec.name
        return name[: -len(".__main__")] if name.endswith(".__main__") else name
    path = getattr(main, "__file__", None)
    if not path:
        raise FunctionReferenceError(
            "functions defined in an interactive session cannot run on worker nodes: "
            "define the function in a module the workers can import"
        )
    path = os.path.abspath(path)
    stem, _ = os.path.splitext(path)
    cwd = os.getcwd()
    rel = os.path.relpath(stem, cwd)
    if not rel.startswith(os.pardir) and all(p.isidentifier() for p in rel.split(os.sep)):
        return rel.replace(os.sep, ".")
    return os.path.basename(stem)


def reference(fn: Callable[..., Any] | str) -> str:
    """The reference that names ``fn``; raises FunctionReferenceError with the fix."""
    if isinstance(fn, str):
        head, sep, tail = fn.partition(":")
        if not sep or not head or not tail:
            raise FunctionReferenceError(
                f"function reference {fn!r} must look like 'package.module:function'"
            )
        return fn
    if not callable(fn):
        raise FunctionReferenceError(f"{fn!r} is not callable")
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname:
        raise FunctionReferenceError(
            f"{fn!r} has no module or qualified name, so workers cannot import it: "
            "pass a function defined at the top level of a module"
        )
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise FunctionReferenceError(
            f"{module}.{qualname} is a lambda or a nested function, which workers cannot "
            "import: define it at the top level of a module and pass that function"
        )
    if module == "__main__":
        return f"{_main_module_name()}:{qualname}"
    try:
        found = resolve(f"{module}:{qualname}")
    except FunctionReferenceError as exc:
        raise FunctionReferenceError(
            f"{module}:{qualname} cannot be imported by reference ({exc}): define the "
            "function at the top level of an importable module"
        ) from None
    if found is not fn and getattr(found, "__wrapped__", None) is not fn:
        raise FunctionReferenceError(
            f"{module}:{qualname} does not lead back to {fn!r} (is the name rebound or "
            "the function decorated without functools.wraps?)"
        )
    return f"{module}:{qualname}"


def resolve(ref: str) -> Callable[..., Any]:
    """Import ``module`` and walk ``qualname``; raises FunctionReferenceError."""
    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise FunctionReferenceError(
            f"function reference {ref!r} must look like 'package.module:function'"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise FunctionReferenceError(
            f"cannot import module {module_name!r} for {ref!r}: {exc} (is the module on "
            "the worker's path? start the worker where it can import it, or pass --path)"
        ) from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise FunctionReferenceError(
                f"module {module_name!r} has no attribute {qualname!r} (from {ref!r})"
            ) from None
    if not callable(obj):
        raise FunctionReferenceError(f"{ref!r} names {type(obj).__name__}, not a function")
    return obj
