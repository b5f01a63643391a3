"""A source's reader thread reads only when the node asks: ``OnDemand``.

The node's main thread calls ``request`` (``worker.sources.base.Source.request``),
the reader thread waits in ``next_demand``, reads, and posts one ``Read``;
``stop_reading`` (from any thread, a signal handler too) cuts a read under way
short through ``interrupt``, and ``close`` ends the thread.
"""

from __future__ import annotations

import threading


class OnDemand:
    """A reader thread's side of the node's demand: the main thread calls
    ``request`` (thread-safe), the reader waits in ``next_demand``;
    ``stop_reading`` cuts a read under way short (``interrupt``) and ``close``
    ends the thread."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.stopping = threading.Event()
        self._demand = 0
        self._cond = threading.Condition()

    def request(self, batches: int) -> None:
        with self._cond:
            self._demand = batches
            self._cond.notify()

    def stop_reading(self) -> None:
        """Read no more (a read under way is cut short). Thread-safe."""
        self.stopping.set()
        with self._cond:
            self._cond.notify_all()
        self.interrupt()

    def interrupt(self) -> None:
        """End a blocking read under way (from another thread)."""

    def close(self) -> None:
        self.closed.set()
        with self._cond:
            self._cond.notify_all()

    def next_demand(self) -> int | None:
        """Wait until batches are asked for: how many, or None once closed."""
        with self._cond:
            while not self._demand and not self.closed.is_set():
                self._cond.wait()
            if self.closed.is_set():
                return None
            want, self._demand = self._demand, 0
            return want
