"""Functions travel by reference: ``"module:qualname"``.

A producer turns a function into a reference and checks, at enqueue time, that
the reference leads back to the same function; a node resolves it once per
process and caches it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from taskfan.boundary import message, reraise_interrupt, type_name
from taskfan.errors import ConfigError, FunctionNotAllowed, FunctionReferenceError


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
        _check_length(fn)
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
        return _check_length(f"{_main_module_name()}:{qualname}")
    try:
        found = resolve(f"{module}:{qualname}")
    except FunctionReferenceError as exc:
        raise FunctionReferenceError(
            f"{module}:{qualname} cannot be imported by reference ({exc}): define the "
            "function at the top level of an importable module"
        ) from None
    if (
        found is not fn
        and getattr(found, "__wrapped__", None) is not fn
        and not _same_method(found, fn)
    ):
        raise FunctionReferenceError(
            f"{module}:{qualname} does not lead back to {fn!r} (is the name rebound or "
            "the function decorated without functools.wraps?)"
        )
    return _check_length(f"{module}:{qualname}")


def _same_method(found: Any, fn: Any) -> bool:
    """Whether both are the same method bound to the same object (a class method:
    each lookup on the class makes a new bound method)."""
    return (
        inspect.ismethod(found)
        and inspect.ismethod(fn)
        and found.__func__ is fn.__func__
        and found.__self__ is fn.__self__
    )


def _check_length(ref: str) -> str:
    if len(ref) > MAX_REF_LENGTH:
        raise FunctionReferenceError(
            f"function reference {ref[:80]!r}... is {len(ref)} characters long, longer than "
            f"{MAX_REF_LENGTH}: nodes refuse it"
        )
    return ref


#: longest function reference: a reference is a label of nodes' metrics and a
#: part of every entry, and Python names are rarely longer than a few dozen characters
MAX_REF_LENGTH = 256


def _dotted(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


def well_formed(ref: str) -> bool:
    """Whether ``ref`` is ``dotted.module:dotted.qualname`` (identifiers only), at
    most MAX_REF_LENGTH characters long."""
    if len(ref) > MAX_REF_LENGTH:
        return False
    module_name, sep, qualname = ref.partition(":")
    return bool(sep) and _dotted(module_name) and _dotted(qualname)


def check_allow_prefix(prefix: str) -> str:
    """An allowlist entry: a dotted module name such as ``myapp`` or ``myapp.tasks``."""
    if not _dotted(prefix):
        raise ConfigError(
            f"allowlist entry {prefix!r} is not a module name such as 'myapp' or 'myapp.tasks'"
        )
    return prefix


def module_allowed(module_name: str, allow: Sequence[str]) -> bool:
    """Whether ``allow`` covers the module: ``myapp`` covers ``myapp`` and
    ``myapp.tasks``, not ``myappx``. An empty allowlist covers everything."""
    if not allow:
        return True
    return any(module_name == prefix or module_name.startswith(prefix + ".") for prefix in allow)


def check_allowed(ref: str, allow: Sequence[str]) -> None:
    """Raise FunctionNotAllowed unless the reference's module is in ``allow``;
    imports nothing, so call it before anything imports the module."""
    if not allow:
        return
    module_name, _, qualname = ref.partition(":")
    if not module_allowed(module_name, allow):
        raise FunctionNotAllowed(
            f"{ref!r} is not allowed on this node: module {module_name!r} is outside its "
            f"allowlist ({', '.join(allow)}; --allow, TASKFAN_ALLOW)"
        )
    parts = qualname.split(".")
    if len(parts) > 1 and parts[-1] == "__call__":  # a callable instance's class
        parts.pop()
    if any(part.startswith("__") for part in parts):
        raise FunctionNotAllowed(
            f"{ref!r} is not allowed on this node: with an allowlist, a reference may not "
            "walk dunder attributes (only a class's own __call__ may close it)"
        )


def resolve(ref: str, allow: Sequence[str] = ()) -> Callable[..., Any]:
    """Import ``module`` and walk ``qualname``; raises FunctionReferenceError.

    With ``allow``, the module is checked before it is imported (FunctionNotAllowed),
    and the function found must be defined in an allowed module too, so that
    ``myapp.tasks:system`` cannot reach ``os.system`` imported into ``myapp.tasks``.
    """
    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise FunctionReferenceError(
            f"function reference {ref!r} must look like 'package.module:function'"
        )
    check_allowed(ref, allow)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise FunctionReferenceError(
            f"cannot import module {module_name!r} for {ref!r}: {exc} (is the module on "
            "the worker's path? start the worker where it can import it, or pass --path)"
        ) from exc
    except BaseException as exc:  # the module's own code ran: sys.exit() at import, ...
        reraise_interrupt(exc)
        raise FunctionReferenceError(
            f"cannot import module {module_name!r} for {ref!r}: {type_name(exc)}: {message(exc)}"
        ) from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise FunctionReferenceError(
                f"module {module_name!r} has no attribute {qualname!r} (from {ref!r})"
            ) from None
        except BaseException as exc:  # a module's __getattr__ or a descriptor ran
            reraise_interrupt(exc)
            raise FunctionReferenceError(
                f"looking up {qualname!r} in module {module_name!r} raised "
                f"{type_name(exc)}: {message(exc)}"
            ) from exc
    if not callable(obj):
        raise FunctionReferenceError(f"{ref!r} names {type(obj).__name__}, not a function")
    if allow:
        defined_in = getattr(obj, "__module__", None)
        if not isinstance(defined_in, str) or not module_allowed(defined_in, allow):
            raise FunctionNotAllowed(
                f"{ref!r} is not allowed on this node: it leads to a function defined in "
                f"{defined_in!r}, outside its allowlist ({', '.join(allow)})"
            )
    return obj
