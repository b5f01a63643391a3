"""How ``Executor.submit`` calls made close together share batches (no I/O).

A submitted call waits in the executor's open buffer until the submitter
thread sends it (``producer.executor.submitter``). Each send takes everything buffered
and cuts it here into batches: calls of one callable, with consecutive call
indexes, at most ``calls_per_batch`` of them and ``BATCH_BYTES`` of arguments.
Calls get their indexes when they are first cut, in submit order per callable;
a call sent before and taken back with its batch (another call of the batch
was cancelled) keeps its index, and its batch is cut around the gap.

How many calls a batch holds follows the function's cost that nodes publish:
a node that takes a batch turns all its calls running, and they can no longer
be cancelled, so a batch holds at most ``BATCH_SECONDS`` of work (as the
stdlib's process pool keeps only one call per process queued ahead), and
``UNKNOWN_COST_CALLS`` while no node has published a cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from producer.callables import Described
from producer.executor.futures import CallFuture

#: seconds of one process's work a batch of calls holds at most
BATCH_SECONDS = 0.005
#: calls a batch holds at most, whatever their cost ...
MAX_CALLS = 1000
#: ... and while no node has published the function's cost
UNKNOWN_COST_CALLS = 4
#: bytes of encoded arguments a batch holds at most (one call may hold more)
BATCH_BYTES = 1024 * 1024

#: a call's states: buffered, being sent, in the queue, failed to send, taken back
OPEN, SENDING, QUEUED, GONE, TAKEN_BACK = "open", "sending", "queued", "gone", "taken back"


@dataclass(eq=False)
class Call:
    """One ``submit``: its future, its callable and its arguments."""

    future: CallFuture
    called: Described
    item: tuple[tuple[Any, ...], dict[str, Any]]  #: (args, kwargs)
    size: int  #: bytes its arguments encode to
    index: int = -1  #: its item index in the job (-1: not cut into a batch yet)
    batch: Sent | None = None
    state: str = OPEN

    @property
    def key(self) -> tuple[str, str, bytes]:
        return (self.called.fn_ref, self.called.wrap, self.called.bound)


@dataclass(eq=False)
class Sent:
    """A batch of calls: its index in the job, and its queue entry once sent."""

    index: int
    calls: list[Call]
    entry_id: bytes | None = None
    payload: bytes = field(default=b"", repr=False)
    started: bool = False  #: a node took it ("s=<batch>" event)


def forget(batch: Sent | None) -> None:
    """A batch settled or taken back: its calls and it no longer hold each other
    (a cycle only the garbage collector would free), nor their arguments."""
    if batch is None:
        return
    for call in batch.calls:
        if call.batch is batch:
            call.batch = None
    batch.calls = []


def calls_per_batch(cost: float | None) -> int:
    """How many calls of a function of ``cost`` seconds each a batch holds."""
    if cost is None:
        return UNKNOWN_COST_CALLS
    if cost <= BATCH_SECONDS / MAX_CALLS:
        return MAX_CALLS
    return max(1, min(MAX_CALLS, int(BATCH_SECONDS / cost)))


def cut(
    calls: Iterable[Call], next_index: int, per_batch: Callable[[str], int]
) -> tuple[list[list[Call]], int]:
    """The batches ``calls`` make, and the next free call index.

    Calls without an index get consecutive ones per callable, in the order
    given; every batch is a run of consecutive indexes of one callable, of at
    most ``per_batch(fn_ref)`` calls and ``BATCH_BYTES`` (one call may hold
    more, on its own)."""
    fresh: dict[tuple[str, str, bytes], list[Call]] = {}
    again: list[Call] = []
    for call in calls:
        if call.index < 0:
            fresh.setdefault(call.key, []).append(call)
        else:
            again.append(call)
    for group in fresh.values():
        for call in group:
            call.index = next_index
            next_index += 1
    runs: list[list[Call]] = []
    for call in sorted(again, key=lambda c: c.index):
        last = runs[-1][-1] if runs else None
        if last is not None and last.index + 1 == call.index and last.key == call.key:
            runs[-1].append(call)
        else:
            runs.append([call])
    runs += fresh.values()
    batches: list[list[Call]] = []
    for run in runs:
        limit = per_batch(run[0].called.fn_ref)
        batch: list[Call] = []
        size = 0
        for call in run:
            if batch and (len(batch) >= limit or size + call.size > BATCH_BYTES):
                batches.append(batch)
                batch, size = [], 0
            batch.append(call)
            size += call.size
        batches.append(batch)
    return batches, next_index


def set_state(calls: list[Call], state: str) -> None:
    """(A function: a loop variable left in the submitter's frame would keep the
    last call's arguments alive.)"""
    for call in calls:
        call.state = state
