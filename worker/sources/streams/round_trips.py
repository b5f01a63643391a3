"""A node's round trip to Redis, as its own calls measure it.

The node's I/O threads time the calls they make anyway (the writer's
pipelines, the heartbeat, the state checks) and ``observe`` each; the estimate
is the shortest of the last ``SAMPLES``: a call also carries Redis's own work
and its reply's transfer, and a loaded machine delays some, so the shortest is
the nearest to the network's part. The scheduler reads ahead by it
(``worker.core.chunk_queue``): a node far from Redis asks for its next batches
while the work it holds still covers the wait for them.
"""

from __future__ import annotations

import threading
from collections import deque


class RoundTrips:
    #: calls the estimate looks back on: few, so that it follows a changed network
    SAMPLES = 4

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=self.SAMPLES)
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        """A call took ``seconds``, from sending it to its reply (thread-safe)."""
        if seconds >= 0:
            with self._lock:
                self._samples.append(seconds)

    def estimate(self) -> float:
        """Seconds of the round trip; 0.0 before any call was timed."""
        with self._lock:
            return min(self._samples, default=0.0)
