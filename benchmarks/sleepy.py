"""A task that sleeps: many nodes on one machine without the CPU as the limit."""

from __future__ import annotations

import time


def nap(seconds: float) -> float:
    """Sleep ``seconds`` and return them."""
    time.sleep(seconds)
    return seconds
