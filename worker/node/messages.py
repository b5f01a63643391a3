"""What the node's threads tell its main thread: one small frozen class per kind.

Every thread that is not the main thread (the reader, the writer, the heartbeat,
the pool's callback thread, the RQ source's reader and writer, and ``Node.stop``
from a signal handler) talks to the main thread only by putting one of these on
the node's ``Events`` queue; the main thread's loop (``Node._handle``) dispatches
on the type with ``match``, and mypy checks that every kind is handled::

  Read(deliveries)                   reader: stream entries read (maybe none)
  ChunkDone(chunk, future)           pool callback: a chunk's future is done
  Written(completed)                 writer: a batch is recorded and acknowledged
  JobsEnded(jobs)                    heartbeat: jobs cancelled, gone or abandoned
  Stop()                             Node.stop: stop reading, finish what is held
  RqRead(batches, found_nothing)     RQ reader: RQ batches read (maybe none)
  RqWritten(delivery, ok, failed)    RQ writer: an RQ batch is recorded

The RQ writer's own operations are typed the same way in ``worker.sources.rq.rq_writer``.
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


@dataclass(frozen=True, slots=True)
class Read:
    """The reader's answer to the node's demand: new or reclaimed stream entries."""

    deliveries: Sequence[Delivery]


@dataclass(frozen=True, slots=True)
class ChunkDone:
    """A chunk's future is done (posted from the pool's callback thread)."""

    chunk: Chunk
    future: Future[ChunkResult]


@dataclass(frozen=True, slots=True)
class Written:
    """The writer recorded (or let go) a batch: the node may forget it."""

    completed: Completed


@dataclass(frozen=True, slots=True)
class JobsEnded:
    """Jobs of held batches that ended meanwhile: job id -> why (cancelled, gone,
    abandoned). Nothing more of them runs."""

    jobs: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Stop:
    """The node was asked to stop (``Node.stop``, maybe from a signal handler)."""


@dataclass(frozen=True, slots=True)
class RqRead:
    """The RQ reader's answer: batches of RQ jobs; ``found_nothing`` when every
    RQ queue was empty."""

    batches: Sequence[Batch]
    found_nothing: bool


@dataclass(frozen=True, slots=True)
class RqWritten:
    """The RQ writer recorded an RQ batch's outcomes: ``ok`` and ``failed`` jobs."""

    delivery: Delivery
    ok: int
    failed: int


#: anything a thread may tell the node's main thread
Event = Read | ChunkDone | Written | JobsEnded | Stop | RqRead | RqWritten

#: the node's event queue. A SimpleQueue: its put() may run in a signal handler
#: (``Node.stop``) while the main thread waits in get(); a Queue's lock would
#: deadlock there.
Events = queue.SimpleQueue[Event]


def new_events() -> Events:
    return queue.SimpleQueue()


def unhandled(message: NoReturn) -> NoReturn:
    """The last ``case`` of a dispatch: mypy reports a kind left unhandled here."""
    raise TypeError(f"unexpected message {message!r}")
