"""Telling producers their calls started, once the calls have run a moment.

A node that takes a batch of ``Executor.submit`` calls tells their producer
(an ``s=<batch>`` event, ``started.lua``), so that their futures turn running.
The announcement is advisory: what takes a call from its producer is the read
itself (``cancel_call.lua``), and the batch's record settles its futures. So it
waits ``ANNOUNCE_AFTER``: a batch recorded by then (most lone calls: a
``submit(...).result()`` takes about a millisecond) is never announced. Sent at
once, it cost each such batch a script call (12% of a one-call batch's node
CPU), and woke the producer's collector for an event it dropped a moment later,
on the same cores the call was running on.

The reader adds what it took (``later``); the writer thread sends what is due
(``send_due``), looking every ``ANNOUNCE_AFTER`` while calls keep coming and
woken by the reader only after a quiet second (``wait``), and drops what it
records (``drop``); handing calls back
(``HeldEntries``) drops theirs and sends ``h=`` under the same lock, so an
``s=`` never follows the ``h=`` of the same hand-back.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from taskfan.keys import QueueKeys
from worker.core.batches import Delivery
from worker.sources.streams.batch_reads import call_of

#: seconds a batch of calls runs before its producer hears it started
ANNOUNCE_AFTER = 0.01
#: the writer looks for announcements due every ``ANNOUNCE_AFTER`` on its own
#: for this many seconds after the last call taken, then sleeps until woken
IDLE_AFTER = 1.0

#: sends ``s=`` (False) or ``h=`` (True) events for these deliveries
Send = Callable[[list[Delivery], bool], None]


class Announcements:
    def __init__(
        self,
        send: Send,
        clock: Callable[[], float] = time.monotonic,
        after: float = ANNOUNCE_AFTER,
    ) -> None:
        self._send = send
        self._clock = clock
        self._after = after
        #: guards ``_due``, and orders every event sent (s= before a later h=)
        self._lock = threading.Lock()
        #: (queue, entry id) -> (delivery, when to announce it); in the order
        #: taken (entry ids are per stream: two queues may both have an id)
        self._due: dict[tuple[QueueKeys, bytes], tuple[Delivery, float]] = {}
        #: when a call was last taken; whether the writer waits until woken
        self._last = -math.inf
        self._sleeping = True

    def later(self, deliveries: Iterable[Delivery]) -> bool:
        """Announce the calls among these once ``ANNOUNCE_AFTER`` passed, unless
        they are recorded or handed back first. Whether the writer must be woken
        to time them: only when it sleeps (``wait``). While calls keep coming it
        looks on its own, so that a lone call's read does not wake a third
        thread of the node in the middle of the call's round trip (0.12 ms of
        a 1.7 ms ``submit(...).result()``)."""
        now = self._clock()
        added = False
        with self._lock:
            for delivery in deliveries:
                if delivery.skip is None and call_of(delivery) is not None:
                    self._due[delivery.queue, delivery.entry_id] = (delivery, now + self._after)
                    added = True
            if not added:
                return False
            self._last = now
            wake, self._sleeping = self._sleeping, False
        return wake

    def wait(self) -> float | None:
        """How long the writer may wait for a batch to record before it calls
        ``send_due``: until the earliest announcement is due; with none,
        ``ANNOUNCE_AFTER`` while a call was taken within ``IDLE_AFTER`` (more
        may come without waking it); else until woken (None: ``later`` wakes
        it from now on)."""
        with self._lock:
            now = self._clock()
            if self._due:
                return max(0.0, min(due for _, due in self._due.values()) - now)
            if now - self._last < IDLE_AFTER:
                return self._after
            self._sleeping = True
            return None

    def drop(self, deliveries: Iterable[Delivery]) -> None:
        """These are recorded (or let go): their producers learn it from the record."""
        with self._lock:
            for delivery in deliveries:
                self._due.pop((delivery.queue, delivery.entry_id), None)

    def send_due(self) -> None:
        """Announce the calls whose time came. Raises what sending raised (the
        writer logs it; they are not sent again: advisory)."""
        with self._lock:
            now = self._clock()
            due = [d for d, when in self._due.values() if when <= now]
            for delivery in due:
                del self._due[delivery.queue, delivery.entry_id]
            if due:
                self._send(due, False)

    def handed_back(self, deliveries: Sequence[Delivery]) -> None:
        """These calls go back to the queue unrun: ``h=`` events, and no ``s=``
        after them. Raises what sending raised."""
        with self._lock:
            for delivery in deliveries:
                self._due.pop((delivery.queue, delivery.entry_id), None)
            self._send(list(deliveries), True)
