"""Items known to be bad before they run, recorded as failed by the producer itself.

``taskfan enqueue --skip-invalid`` turns a malformed input line into a
``Rejected`` item instead of stopping. The Enqueuer never queues a rejected
item: it cuts batches around each run of them and records the run at once,
through ``record.lua`` like any node's result, as failed items of type
``InvalidInput`` whose message is the reason. So nodes never see them, the wire
format does not change, the job's counters and events stay exact, and readers
find each rejected item's outcome at its own index, in input order.

The cost: each run of rejected items splits the batch it falls in, so inputs
with many scattered bad lines make more, smaller batches.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from taskfan.codec import Codec
from taskfan.outcomes import encode_result

#: the error type recorded for a rejected item
REJECTED_TYPE = "InvalidInput"


class Rejected(NamedTuple):
    """An input that cannot run; recorded as failed with ``reason``, never queued."""

    reason: str


@dataclass(frozen=True)
class RecordedBatch:
    """A batch of rejected items, recorded by the producer instead of queued."""

    index: int
    start: int
    count: int
    payload: bytes  #: the result entry (see taskfan/outcomes.py)


def _is_rejected(item: Any) -> bool:
    return type(item) is Rejected


def runs(batch: list[Any]) -> Iterator[tuple[bool, list[Any]]]:
    """Split a batch into ``(rejected, items)`` runs, in order."""
    if Rejected not in set(map(type, batch)):  # the usual case: one run, no copy
        yield False, batch
        return
    for rejected, group in itertools.groupby(batch, key=_is_rejected):
        yield rejected, list(group)


def recorded_batch(index: int, start: int, items: list[Rejected], codec: Codec) -> RecordedBatch:
    """The result entry that records every item of ``items`` as failed."""
    count = len(items)
    errors = [[offset, REJECTED_TYPE, item.reason, "", None] for offset, item in enumerate(items)]
    blob = codec.dumps([[None] * count, errors, []])
    return RecordedBatch(index, start, count, encode_result(start, count, count, [blob]))
