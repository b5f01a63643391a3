"""A chunk's items on their way from the node to a pool process.

The node pickles a chunk's items itself, before it hands them to the pool,
rather than leaving it to the pool's feeder thread: pickling runs each item's
own ``__reduce__``, and a feeder thread that meets a BaseException there
(SystemExit, ...) dies, after which no chunk ever reaches the pool again and the
node hangs. Here an item whose pickling raises anything is sent as an
``Unsendable`` holding what it raised, and fails alone; the others run.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any, NamedTuple

from taskfan.boundary import Failure, describe


class Unsendable(NamedTuple):
    """Stands for an item the node could not pickle for its pool."""

    failure: Failure


class UndecodableItems(Exception):
    """A pool process could not unpickle the items of its chunk."""


def pack(items: Sequence[Any]) -> bytes:
    """The items pickled for a pool process; never raises for an item's sake."""
    try:
        return pickle.dumps(list(items), protocol=5)
    except BaseException:  # an item's own __reduce__ ran: look item by item
        pass
    sendable: list[Any] = []
    for item in items:
        try:
            pickle.dumps(item, protocol=5)
        except BaseException as exc:
            item = Unsendable(describe(exc))
        sendable.append(item)
    try:
        return pickle.dumps(sendable, protocol=5)
    except BaseException as exc:  # items that pickle alone, not together
        return pickle.dumps([Unsendable(describe(exc))] * len(sendable), protocol=5)


def unpack(data: bytes) -> list[Any]:
    """The items, in the pool process; UndecodableItems when they cannot be had."""
    try:
        items = pickle.loads(data)
    except BaseException as exc:  # the items' own code ran while they loaded
        failure = describe(exc)
        raise UndecodableItems(
            f"its items could not be unpickled in the pool process: {failure.type}: "
            f"{failure.message}"
        ) from None
    return list(items)
