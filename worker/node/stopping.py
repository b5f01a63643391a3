"""How a node stops: gracefully, then cold.

A graceful stop (SIGTERM, Ctrl-C, ``Node.stop``) reads no more and hands back
at once the batches it has not started, and those that only wait for retries
due after the grace period (they cannot finish in it); it finishes and records
the others, running the retries that come due, for up to ``grace_period``. Then
it turns cold: what is still unfinished goes back too. A second signal turns
cold at once. Each batch goes back to the source it came from
(``Source.hand_back``): the queue streams claim their entries with a large idle
time, so that other nodes reclaim them at their next check.

Reads that arrive after the node's loop ended hold batches too: ``late_reads``
finds them in the node's events, for their sources to hand back.

CPython runs a signal's Python handler between bytecodes of the main thread. A
signal that lands just before the main thread blocks on its event queue would
be handled only at the loop's next wake-up (the next event, or up to a minute
later): ``SignalWaker`` wakes it at once, from the wakeup fd the interpreter
writes to as the signal arrives.
"""

from __future__ import annotations

import logging
import queue
import signal
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from worker.core.batches import Batch, Delivery
from worker.core.scheduler import Scheduler
from worker.node.messages import Events, Read

if TYPE_CHECKING:
    from worker.sources.base import Source

log = logging.getLogger(__name__)


def install_signal_handlers(stop: Callable[..., None], stopping: threading.Event) -> None:
    """SIGTERM / SIGINT ``stop()`` gracefully; a second one ``stop(cold=True)``.

    A SIGINT ignored from the start stays ignored: a shell starts background
    jobs (``taskfan worker &`` in a script) that way so that a Ctrl-C meant for
    the foreground job does not reach them. Python keeps it so for
    KeyboardInterrupt, and classic Unix tools catch SIGINT only when it is not
    ignored; such a node stops on SIGTERM.
    """

    def handle(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if stopping.is_set():
            log.warning("%s again: cold stop, handing unfinished batches back", name)
            stop(cold=True)
        else:
            log.info("%s: finishing the batches in flight, then stopping", name)
            stop()

    signal.signal(signal.SIGTERM, handle)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        log.info("SIGINT is ignored (started in the background): stop this node with SIGTERM")
    else:
        signal.signal(signal.SIGINT, handle)


class SignalWaker:
    """Calls ``wake`` (from a thread of its own) each time a signal with a Python
    handler arrives, so that the main thread, blocked on its event queue, runs
    the handler now. Install and close it from the main thread."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        # a socket pair, not a pipe: what set_wakeup_fd takes on every platform
        self._read, self._write = socket.socketpair()
        self._write.setblocking(False)
        self._previous = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._run, name="taskfan-signals", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                if not self._read.recv(64):
                    return  # closed
            except OSError:
                return
            self._wake()

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous)
        self._write.close()  # the thread reads the end of the stream, and ends
        self._thread.join(timeout=5)
        self._read.close()


def hand_back_unfinishable(
    scheduler: Scheduler,
    owner: Callable[[Delivery], Source],
    release: Callable[[Delivery], None],
    stop_by: float | None,
) -> None:
    """Hand back the batches not started, and those that only wait for retries
    due after ``stop_by``, each to its source (``owner``); ``release`` forgets each."""
    unstarted = scheduler.take_unstarted()
    if stop_by is not None:
        # They cannot finish in the grace period: back now, not at its end.
        unstarted += scheduler.take_waiting(after=stop_by)
    for source, batches in by_source(unstarted, owner).items():
        source.hand_back([batch.delivery for batch in batches])
        for batch in batches:
            release(batch.delivery)


def by_source(
    batches: list[Batch], owner: Callable[[Delivery], Source]
) -> dict[Source, list[Batch]]:
    """``batches`` grouped by the source each came from, in their order."""
    out: dict[Source, list[Batch]] = {}
    for batch in batches:
        out.setdefault(owner(batch.delivery), []).append(batch)
    return out


def grace_over(scheduler: Scheduler, grace_period: float, stop_by: float, now: float) -> bool:
    """Whether the grace period is over; then says what goes back (a warning)."""
    if now < stop_by:
        return False
    log.warning(
        "grace period of %ss over: handing %d unfinished batches back (%s)",
        grace_period,
        len(scheduler.batches),
        ", ".join(
            f"job {b.entry.job_id} batch {b.entry.field}" for b in scheduler.batches.values()
        ),
    )
    return True


def late_reads(events: Events) -> dict[Source, list[Delivery]]:
    """What reads delivered after the node's loop ended, left in its events, by
    source: their batches go back to the queue (``Source.after_threads``)."""
    late: dict[Source, list[Delivery]] = {}
    while True:
        try:
            event = events.get_nowait()
        except queue.Empty:
            break
        if isinstance(event, Read):  # nothing else holds a batch
            late.setdefault(event.source, []).extend(event.deliveries())
    return late
