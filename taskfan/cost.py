"""Function costs: the seconds per item that nodes measured for a function.

Key ``keys.cost(fn)``, a decimal float; nodes refresh it, and it expires after
``COST_TTL`` seconds without. Producers read it to size batches
(``producer.sizing``); anyone who can write to Redis can write it, so a value
that is not a sane number reads as no cost at all.
"""

from __future__ import annotations

import math

#: seconds a published function cost lives without a node refreshing it
COST_TTL = 7 * 24 * 3600


def encode_cost(seconds_per_item: float) -> str:
    return repr(float(seconds_per_item))


def parse_cost(raw: bytes | str | None) -> float | None:
    """A published cost, or None when there is none or it is not a sane number
    (anyone who can write to Redis can write this key: it only sizes batches)."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None
