"""What the node's threads tell its main thread: one small frozen class per kind.

Every thread that is not the main thread (the sources' readers and writers,
the heartbeat, the pool's callback thread, and ``Node.stop`` from a signal
handler) talks to the main thread only by putting one of these on the node's
``Events`` queue; the main thread's loop (``Node._handle``) dispatches on the
type with ``match``, and mypy checks that every kind is handled::

  Read(source, entries, batches, found)  a source's reader: batches read (maybe none)
  ChunkDone(chunk, future)               pool callback: a chunk's future is done
  Written(source, completed)             a source's writer: a batch is recorded
  JobsEnded(jobs)                        heartbeat: jobs cancelled, gone or abandoned
  Stop()                                 Node.stop: stop reading, finish what is held

``Read`` and ``Written`` name the source (``worker.sources.base.Source``) they
come from, so the node answers the right one without knowing what it is.
"""

from __future__ import annotations

import queue
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from worker.core.batches import Batch, Chunk, Completed, Delivery
    from worker.pool.child import ChunkResult
    from worker.sources.base import Source


@dataclass(frozen=True, slots=True)
class Read:
    """A source's answer to the node's demand (one per ``Source.request``).

    ``entries`` are delivered entries for the node's intake to check and decode
    (``Scheduler.accept``); ``batches`` are batches the source built itself, their
    items known (``Scheduler.admit``). ``found``: the read found something (a
    burst node ends once every source's last read found nothing)."""

    source: Source
    entries: Sequence[Delivery] = ()
    batches: Sequence[Batch] = ()
    found: bool = False

    def deliveries(self) -> list[Delivery]:
        """Every delivery it holds, its batches' included."""
        return [*self.entries, *(batch.delivery for batch in self.batches)]


@dataclass(frozen=True, slots=True)
class ChunkDone:
    """A chunk's future is done (posted from the pool's callback thread)."""

    chunk: Chunk
    future: Future[ChunkResult]


@dataclass(frozen=True, slots=True)
class Written:
    """A source recorded (or let go) a batch: the node may forget it.
    ``completed`` says what the source recorded (its ``ok`` and ``failed``)."""

    source: Source
    completed: Completed


@dataclass(frozen=True, slots=True)
class JobsEnded:
    """Jobs of held batches that ended meanwhile: job id -> why (cancelled, gone,
    abandoned). Nothing more of them runs."""

    jobs: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Stop:
    """The node was asked to stop (``Node.stop``, maybe from a signal handler), or
    a signal arrived (``worker.node.stopping.SignalWaker``): it wakes the loop,
    which acts on the node's stop flag."""


#: anything a thread may tell the node's main thread
Event = Read | ChunkDone | Written | JobsEnded | Stop

#: the node's event queue. A SimpleQueue: its put() may run in a signal handler
#: (``Node.stop``) while the main thread waits in get(); a Queue's lock would
#: deadlock there.
Events = queue.SimpleQueue[Event]


def new_events() -> Events:
    return queue.SimpleQueue()


def unhandled(message: NoReturn) -> NoReturn:
    """The last ``case`` of a dispatch: mypy reports a kind left unhandled here."""
    raise TypeError(f"unexpected message {message!r}")
