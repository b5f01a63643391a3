"""RQ's plugin: ``taskfan worker --rq-queue Q`` drains RQ queues through an
``RqSource``. Importing this module imports no RQ: building the source does,
and says which extra to install when RQ is missing (docs/rq.md)."""

from __future__ import annotations

import click

from worker.sources.base import NodeParts, Source, SourcePlugin

OPTIONS = (
    click.option(
        "--rq-queue",
        "rq_queues",
        multiple=True,
        help="RQ queue to drain (docs/rq.md); repeat for several, in priority order. Without "
        "--queue the node then serves no taskfan queue [env: TASKFAN_RQ_QUEUE]",
    ),
    click.option(
        "--rq-serializer",
        help="Serializer of the RQ queues: pickle (RQ's default), json, or module.Name, as "
        "for `rq worker --serializer`. With a secret or --no-pickle only json, or one "
        "marked --rq-serializer-trusted [env: TASKFAN_RQ_SERIALIZER]",
    ),
    click.option(
        "--rq-serializer-trusted",
        is_flag=True,
        default=None,
        help="Say that --rq-serializer never unpickles: lets a node with a secret or "
        "--no-pickle drain queues of a serializer other than json "
        "[env: TASKFAN_RQ_SERIALIZER_TRUSTED]",
    ),
    click.option(
        "--rq-with-scheduler",
        is_flag=True,
        default=None,
        help="Also move due jobs of the RQ queues' scheduled registries to the queues, as "
        "`rq worker --with-scheduler` [env: TASKFAN_RQ_WITH_SCHEDULER]",
    ),
)


def build(parts: NodeParts) -> Source | None:
    if not parts.settings.rq_queues:
        return None
    from worker.sources.rq.rq_source import RqSource

    return RqSource(parts)


PLUGIN = SourcePlugin(
    name="RQ queues",
    options=OPTIONS,
    build=build,
    order=10,
    # RQ's code that the adapter calls logs a line per job: not for operators
    chatty_loggers=("rq.job", "rq.queue", "rq.registry", "rq.scheduler", "rq.worker"),
)
