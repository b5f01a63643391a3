"""How a node stops: gracefully, then cold.

A graceful stop (SIGTERM, Ctrl-C, ``Node.stop``) reads no more and hands back
at once the batches it has not started, and those that only wait for retries
due after the grace period (they cannot finish in it); it finishes and records
the others, running the retries that come due, for up to ``grace_period``. Then
it turns cold: what is still unfinished goes back too. A second signal turns
cold at once. Handing back claims the entries with a large idle time
(``worker.sources.streams.held_entries``), so that other nodes reclaim them at their next check.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taskfan.keys import QueueKeys
from worker.core.batches import Delivery
from worker.core.scheduler import Scheduler
from worker.sources.streams.held_entries import HeldEntries

if TYPE_CHECKING:
    from worker.sources.rq.rq_source import RqSource

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


def hand_back_unfinishable(
    scheduler: Scheduler,
    held: HeldEntries,
    rq: RqSource | None,
    release: Callable[[Delivery], None],
    stop_by: float | None,
) -> None:
    """Hand back the batches not started, and those that only wait for retries
    due after ``stop_by``; ``release`` forgets each."""
    unstarted = scheduler.take_unstarted()
    if rq is not None:
        rq.hand_back([b.delivery for b in unstarted if rq.owns(b.delivery)])
        for batch in [b for b in unstarted if rq.owns(b.delivery)]:
            release(batch.delivery)
        unstarted = [b for b in unstarted if not rq.owns(b.delivery)]
    if stop_by is not None:
        # They cannot finish in the grace period: back now, not at its end.
        unstarted += scheduler.take_waiting(after=stop_by)
    if unstarted:
        entries: dict[QueueKeys, list[Any]] = {}
        for batch in unstarted:  # every batch of each queue, not only its last
            entries.setdefault(batch.delivery.queue, []).append(batch.delivery.entry_id)
        held.hand_back(entries)
        for batch in unstarted:
            release(batch.delivery)


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


def rq_unfinished(scheduler: Scheduler, rq: RqSource) -> list[tuple[Delivery, dict[int, bytes]]]:
    """The RQ batches still held, with the results of their chunks so far (a cold
    stop records what ran, ``RqSource.close``)."""
    batches = scheduler.batches.values()
    return [(b.delivery, b.blobs) for b in batches if rq.owns(b.delivery)]
