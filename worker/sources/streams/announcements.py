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
(``send_due``) and drops what it records (``drop``); handing calls back
(``HeldEntries``) drops theirs and sends ``h=`` under the same lock, so an
``s=`` never follows the ``h=`` of the same hand-back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence

from taskfan.keys import QueueKeys
from worker.core.batches import Delivery
from worker.sources.streams.batch_reads import call_of

#: seconds a batch of calls runs before its producer hears it started
ANNOUNCE_AFTER = 0.01

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

    def later(self, deliveries: Iterable[Delivery]) -> bool:
        """Announce the calls among these once ``ANNOUNCE_AFTER`` passed, unless
        they are recorded or handed back first. Whether any was added (the
        writer should then wake, to time it)."""
        due = self._clock() + self._after
        added = False
        with self._lock:
            for delivery in deliveries:
                if delivery.skip is None and call_of(delivery) is not None:
                    self._due[delivery.queue, delivery.entry_id] = (delivery, due)
                    added = True
        return added

    def drop(self, deliveries: Iterable[Delivery]) -> None:
        """These are recorded (or let go): their producers learn it from the record."""
        with self._lock:
            for delivery in deliveries:
                self._due.pop((delivery.queue, delivery.entry_id), None)

    def next_due(self) -> float | None:
        """Seconds until the earliest announcement is due (0: now); None with none."""
        with self._lock:
            if not self._due:
                return None
            first = min(due for _, due in self._due.values())
        return max(0.0, first - self._clock())

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
