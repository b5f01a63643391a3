"""RQ's plugin: ``taskfan worker --rq-queue Q`` drains RQ queues through an
``RqSource``. Importing this module imports no RQ: building the source does,
and says which extra to install when RQ is missing (docs/rq.md)."""

from __future__ import annotations

from worker.sources.base import NodeParts, Source, SourcePlugin


def build(parts: NodeParts) -> Source | None:
    if not parts.settings.rq_queues:
        return None
    from worker.sources.rq.rq_source import RqSource

    return RqSource(parts)


PLUGIN = SourcePlugin(
    name="RQ queues",
    options=(),  # still declared by worker/cli.py
    build=build,
    order=10,
)
