"""Timed runs and their statistics: medians of repeats, percentiles of latencies."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

#: a setting whose worst run is over this many times its median is a finding to
#: explain (issue 18, item 4)
UNSTEADY = 1.5


def percentile(samples: list[float], p: float) -> float:
    """The nearest-rank percentile (``p`` in 0..100) of ``samples``."""
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Run:
    """Repeated timings of one runner at one setting on one item count."""

    runner: str  #: "local", "taskfan" or "rq"
    items: int
    batch_size: int | None = None  #: taskfan only; None: automatic
    chunksize: int | None = None  #: None: automatic (taskfan) or not applicable (rq)
    seconds: list[float] = field(default_factory=list)
    #: peers only: the variant's key in its driver, and what it is
    variant: str | None = None
    description: str | None = None

    @property
    def auto(self) -> bool:
        return self.runner == "taskfan" and self.batch_size is None and self.chunksize is None

    @property
    def label(self) -> str:
        if self.description is not None:
            size = "" if self.chunksize is None else f", chunks of {self.chunksize:,}"
            return f"{self.description}{size}"
        if self.runner == "local":
            return f"local ProcessPoolExecutor(2), chunksize {self.chunksize}"
        if self.runner == "rq":
            return f"RQ, 2 SimpleWorkers, {self.items:,} items"
        if self.runner == "taskfan-rq":
            return f"taskfan, 1 node (2 processes) on the RQ queue, {self.items:,} items"
        if self.auto:
            return "taskfan, automatic sizes"
        return f"taskfan, batch {_size(self.batch_size)} x chunk {_size(self.chunksize)}"

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def worst(self) -> float:
        return max(self.seconds)

    @property
    def unsteady(self) -> bool:
        """The worst run took over UNSTEADY times the median (issue 18, item 4)."""
        return self.worst > UNSTEADY * self.median

    @property
    def items_per_s(self) -> float:
        return self.items / self.median

    def ratio_to(self, best: Run) -> tuple[float, float]:
        """(median, worst) per item over ``best``'s median per item: a plain time
        ratio when both ran the same items."""
        per_item = best.median / best.items
        return self.median / self.items / per_item, self.worst / self.items / per_item

    def to_json(self) -> dict[str, Any]:
        return {
            "runner": self.runner,
            "label": self.label,
            "items": self.items,
            "batch_size": self.batch_size,
            "chunksize": self.chunksize,
            "auto": self.auto,
            "seconds": self.seconds,
            "median": self.median,
            "worst": self.worst,
            "worst_over_median": self.worst / self.median,
            "unsteady": self.unsteady,
            "items_per_s": self.items_per_s,
            **({"variant": self.variant} if self.variant else {}),
        }


def _size(value: int | None) -> str:
    return "auto" if value is None else f"{value:,}"
