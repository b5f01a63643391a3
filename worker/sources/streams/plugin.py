"""The queue streams' plugin: a node with ``--queue`` (taskfan's own queues)
reads them through a ``StreamsSource``. Its option, ``--queue``, is the worker
command's own: every node had it before sources were plug-ins."""

from __future__ import annotations

from worker.sources.base import NodeParts, Source, SourcePlugin


def build(parts: NodeParts) -> Source | None:
    if not parts.settings.queues:
        return None
    from worker.sources.streams.source import StreamsSource

    return StreamsSource(parts)


PLUGIN = SourcePlugin(name="queue streams", options=(), build=build, order=0)
