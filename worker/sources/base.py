"""What a node needs from a source of batches: the ``Source`` protocol.

A node holds no knowledge of where its batches come from. Each source (the
queue streams, ``worker.sources.streams``, and each other package of
``worker/sources/``) reads batches when the node asks, records them when the node is done with
them, hands back what the node lets go of, and renews its leases from the
node's heartbeat. The node talks to every source the same way::

  main thread                         the source's threads             node's events
  -----------                         --------------------             -------------
  request(n)  ----------------------> reader: read about n batches --> Read(source, ...)
  arrived(entries) (hold them)
  started(delivery, lo, hi) (a chunk went to the pool)
  complete(completed, batch) -------> writer: record, acknowledge ---> Written(source, ...)
  written(completed) (forget them)
  give_back(delivery) / hand_back(deliveries): back to the queue, for others
                                      heartbeat thread: beat() (leases)
  stop_reading() (any thread, a signal handler too)
  close(cold, held) ... threads joined ... after_threads(late)

Every ``request`` gets exactly one ``Read`` and every ``complete`` exactly one
``Written``, posted from any thread to the node's event queue
(``worker.node.messages``); the node counts on it to know when a source is idle
and when a batch is done. A delivery belongs to one source (``owns``), so a
batch always goes back where it came from.

Each source comes with a ``SourcePlugin`` (a ``plugin`` module in its package,
found by ``worker.sources.registry``): its command-line options and how to
build it from the node's settings (``NodeParts``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from taskfan.settings import Settings
    from worker.core.batches import Batch, Completed, Delivery
    from worker.core.chunk_sizing import ChunkSizer
    from worker.node.messages import Events
    from worker.services.stats import NodeStats
    from worker.sources.streams.redis_io import NodeRedis


class Source(Protocol):
    """A source of batches, as the node uses it. Unless said otherwise, a
    method runs in the node's main thread."""

    #: modules a chunk's function may come from, checked in the pool process
    #: (``--allow``); ``()`` lets any through: a source whose chunks run a runner
    #: of its own that checks each job's function itself
    allow: tuple[str, ...]

    def labels(self) -> list[str]:
        """The queues it serves, as the node's start line names them."""
        ...

    def record_fields(self) -> Mapping[str, str]:
        """Fields it adds to the node record (``taskfan:node:ID``)."""
        ...

    def prepare(self) -> None:
        """Before any thread starts: check and set up what it reads from."""
        ...

    def threads(self) -> list[tuple[str, Callable[[], None]]]:
        """The threads it needs (name, target); the node starts them after
        ``prepare`` and joins them after ``close``."""
        ...

    def request(self, batches: int) -> None:
        """Read about ``batches`` batches (at least one). Exactly one ``Read(self,
        ...)`` answers; the node asks again only after it came."""
        ...

    def arrived(self, entries: Sequence[Delivery]) -> list[Delivery]:
        """The entries of a ``Read`` the node is to take in: the source now holds
        them (renews their leases) until ``written`` or a hand back. It leaves
        out entries it holds already (a read that reclaimed its own)."""
        ...

    def owns(self, delivery: Delivery) -> bool:
        """Whether ``delivery`` came from this source."""
        ...

    def started(self, delivery: Delivery, lo: int, hi: int) -> None:
        """Items ``lo`` to ``hi - 1`` of one of its batches entered the pool
        (again, after a crash: a source records a start once)."""
        ...

    def complete(self, completed: Completed, batch: Batch | None) -> None:
        """Record (or dead-letter, or let go) one of its batches and acknowledge
        it; ``batch`` is the node's, while it holds it (its chunks' results).
        Exactly one ``Written(self, completed)`` answers, with the counts the
        source recorded."""
        ...

    def written(self, completed: Completed) -> None:
        """Its ``Written`` reached the main thread: forget the batch, count it."""
        ...

    def give_back(self, delivery: Delivery) -> None:
        """One batch this node will not run (it cannot run its function): back at
        once for another node, this delivery not counted against it."""
        ...

    def hand_back(self, deliveries: Sequence[Delivery]) -> None:
        """A stopping node's batches it will not start or cannot finish: back to
        the queue at once, and forgotten."""
        ...

    def beat(self) -> None:
        """From the node's heartbeat thread, each interval: renew the leases of
        what it holds. Redis errors go up to the heartbeat."""
        ...

    def stop_reading(self) -> None:
        """Read no more; cut a blocking read short. Any thread, a signal handler
        in the main thread too: quick, and no lock the main thread may hold
        (a reentrant one at most)."""
        ...

    def close(self, cold: bool, held: Sequence[Batch]) -> None:
        """The node's loop ended: let its threads end once their work is done.
        On a cold stop, ``held`` (its batches the node still holds, with their
        chunks' results so far) are settled: handed back, or recorded as far as
        they ran."""
        ...

    def after_threads(self, late: Sequence[Delivery]) -> None:
        """Its threads are done: ``late`` are what reads delivered after the loop
        ended (back to the queue). Let go of connections and registrations."""
        ...


@dataclass(frozen=True)
class NodeParts:
    """What a source may use of the node that builds it."""

    settings: Settings
    node_id: str
    #: the node's Redis I/O (its client, its node record, the queue streams)
    node_redis: NodeRedis
    #: the node's event queue: where ``Read`` and ``Written`` go
    events: Events
    #: the node's counters (main thread only)
    stats: NodeStats
    #: chunk sizes and the measured cost per item of each function
    sizer: ChunkSizer
    #: the node's clock (monotonic seconds)
    clock: Callable[[], float]


#: a click option, as a decorator of the ``taskfan worker`` command
CliOption = Callable[[Callable[..., Any]], Callable[..., Any]]


@dataclass(frozen=True)
class SourcePlugin:
    """A kind of source: the ``PLUGIN`` of a ``plugin`` module in a package of
    ``worker/sources/`` (``worker.sources.registry`` finds them)."""

    #: its name, for messages
    name: str
    #: the options ``taskfan worker`` takes for it; each names a ``Settings``
    #: field, which the worker command passes on as given
    options: Sequence[CliOption]
    #: builds the node's source, or None when the settings ask for none. Runs
    #: in the node's constructor; a ``ConfigError`` is the operator's to fix
    build: Callable[[NodeParts], Source | None]
    #: where it stands among sources: asked first, listed first
    order: int = 100
    #: loggers of a library it drives that log a line per job: quieted unless
    #: the node logs at DEBUG
    chatty_loggers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert self.name, "a source plugin needs a name"
