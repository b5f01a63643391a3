"""The kinds of sources a node can read from: every package of ``worker/sources/``
with a ``plugin`` module that defines ``PLUGIN`` (a ``SourcePlugin``).

The node builds its sources from them (``build_sources``), and ``taskfan worker``
takes their options (``cli_options``), so neither names a source. Adding a
source is adding a package here; see docs/architecture.md.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import pkgutil

import worker.sources
from worker.sources.base import CliOption, NodeParts, Source, SourcePlugin


@functools.cache
def plugins() -> tuple[SourcePlugin, ...]:
    """Every source plugin, in their ``order``. Importing a plugin imports no
    library its source drives: only building the source does."""
    found = []
    for info in pkgutil.iter_modules(worker.sources.__path__):
        if not info.ispkg:
            continue
        name = f"{worker.sources.__name__}.{info.name}.plugin"
        if importlib.util.find_spec(name) is None:
            continue
        plugin = importlib.import_module(name).PLUGIN
        if not isinstance(plugin, SourcePlugin):
            raise TypeError(f"{name}.PLUGIN is not a SourcePlugin: {plugin!r}")
        found.append(plugin)
    return tuple(sorted(found, key=lambda p: (p.order, p.name)))


def build_sources(parts: NodeParts) -> list[Source]:
    """The sources ``parts.settings`` ask for, in their plugins' order."""
    built = (plugin.build(parts) for plugin in plugins())
    return [source for source in built if source is not None]


def cli_options() -> list[CliOption]:
    """Every source's options for ``taskfan worker``, in the plugins' order."""
    return [option for plugin in plugins() for option in plugin.options]


def chatty_loggers() -> list[str]:
    """Loggers of the libraries sources drive that log a line per job."""
    return [name for plugin in plugins() for name in plugin.chatty_loggers]
