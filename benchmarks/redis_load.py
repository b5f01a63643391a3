"""What jobs cost the Redis servers they run on: CPU and commands, per batch and per item.

``Servers`` reads ``INFO cpu`` (the server process's ``used_cpu_sys`` +
``used_cpu_user``) and ``INFO commandstats`` (calls and microseconds per
command) of every server, one server or each primary of a cluster, before and
after a run of jobs whose batches and items are known; ``Usage`` is the
difference. ``probe`` runs jobs of one item count at two batch sizes and
splits Redis's CPU into a part per batch and a part per item (two jobs, two
unknowns: ``cpu = batches x per_batch + items x per_item``, least squares over
the repeats). ``benchmarks.many_nodes`` prints both; docs/scaling.md derives
from them how many nodes and items per second one Redis serves.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis


@dataclass(frozen=True)
class ServerStats:
    cpu: float  #: seconds of CPU (user + system) of the server process
    calls: Counter[str]  #: commands run, by name (those inside Lua scripts included)
    usec: Counter[str]  #: microseconds spent in each command, by name

    @classmethod
    def take(cls, r: redis.Redis) -> ServerStats:
        cpu: Any = r.info("cpu")
        stats: Any = r.info("commandstats")
        calls: Counter[str] = Counter()
        usec: Counter[str] = Counter()
        for name, value in stats.items():
            calls[name.removeprefix("cmdstat_")] = int(value["calls"])
            usec[name.removeprefix("cmdstat_")] = int(value["usec"])
        return cls(float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), calls, usec)

    def __sub__(self, before: ServerStats) -> ServerStats:
        calls, usec = self.calls - before.calls, self.usec - before.usec
        for ours in ("info", "cluster|info", "cluster"):  # the snapshots themselves
            calls.pop(ours, None)
            usec.pop(ours, None)
        return ServerStats(self.cpu - before.cpu, calls, usec)

    def __add__(self, other: ServerStats) -> ServerStats:
        return ServerStats(self.cpu + other.cpu, self.calls + other.calls, self.usec + other.usec)


@dataclass
class Usage:
    """What a run of jobs cost each server: their batches, items and wall time."""

    names: list[str]
    per_server: list[ServerStats]
    batches: int = 0
    items: int = 0
    seconds: float = 0.0

    @property
    def cpu(self) -> float:
        return sum(s.cpu for s in self.per_server)

    @property
    def calls(self) -> Counter[str]:
        return sum((s.calls for s in self.per_server), Counter())

    @property
    def usec(self) -> Counter[str]:
        return sum((s.usec for s in self.per_server), Counter())

    def add(self, other: Usage) -> None:
        self.per_server = [a + b for a, b in zip(self.per_server, other.per_server, strict=True)]
        self.batches += other.batches
        self.items += other.items
        self.seconds += other.seconds

    def summary(self) -> str:
        """CPU per batch and per item, commands per batch, and each server's busy share."""
        batches, items = max(1, self.batches), max(1, self.items)
        pairs = zip(self.names, self.per_server, strict=True)
        busy = (
            ", ".join(f"{n} {s.cpu / self.seconds:.0%}" for n, s in pairs) if self.seconds else "-"
        )
        by_server = ""
        if len(self.per_server) > 1:
            each = ", ".join(f"{n} {1e6 * s.cpu / batches:.0f}"
                             for n, s in zip(self.names, self.per_server, strict=True))  # fmt: skip
            by_server = f" ({each})"
        return (
            f"Redis CPU {1e6 * self.cpu / batches:.0f} µs per batch{by_server}, "
            f"{1e6 * self.cpu / items:.1f} µs per item; {sum(self.calls.values()) / batches:.1f} "
            f"commands per batch; busy (CPU / wall time): {busy}"
        )

    def commands(self, shown: int = 8) -> str:
        """The commands that took the most time, per batch: calls and microseconds."""
        batches = max(1, self.batches)
        usec = self.usec
        calls = self.calls
        top = sorted(usec, key=lambda name: -usec[name])[:shown]
        return ", ".join(
            f"{name} {calls[name] / batches:.2f} x {usec[name] / max(1, calls[name]):.1f} µs"
            for name in top
        )


@dataclass
class Servers:
    """Plain clients of each server (one, or every primary of a cluster), by name."""

    clients: list[redis.Redis]
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.names:
            self.names = [f"server {i}" for i in range(len(self.clients))]

    def take(self) -> list[ServerStats]:
        return [ServerStats.take(c) for c in self.clients]

    def since(self, before: list[ServerStats], batches: int, items: int, seconds: float) -> Usage:
        after = self.take()
        used = [a - b for a, b in zip(after, before, strict=True)]
        return Usage(self.names, used, batches, items, seconds)

    def empty(self) -> Usage:
        zero = ServerStats(0.0, Counter(), Counter())
        return Usage(self.names, [zero] * len(self.clients))

    def close(self) -> None:
        for c in self.clients:
            c.close()


#: a job run for the probe: (items, batch size) -> (batches it made, seconds it took)
RunJob = Callable[[int, int], tuple[int, float]]


@dataclass(frozen=True)
class Split:
    per_batch: float  #: CPU seconds per batch
    per_item: float  #: CPU seconds per item
    usages: Sequence[Usage]


def probe(servers: Servers, run_job: RunJob, items: int, sizes: Sequence[int],
          repeats: int) -> Split:  # fmt: skip
    """Jobs of ``items`` items at each batch size of ``sizes``, ``repeats`` times,
    and the least-squares split of Redis's CPU into per batch and per item."""
    usages: list[Usage] = []
    for _ in range(repeats):
        for size in sizes:
            before = servers.take()
            started = time.perf_counter()
            batches, _ = run_job(items, size)
            usages.append(servers.since(before, batches, items, time.perf_counter() - started))
    return Split(*_fit([(u.batches, u.items, u.cpu) for u in usages]), usages)


def _fit(rows: list[tuple[int, int, float]]) -> tuple[float, float]:
    """Least squares of ``cpu = batches x a + items x b`` (no intercept)."""
    sbb = sum(b * b for b, _, _ in rows)
    sii = sum(i * i for _, i, _ in rows)
    sbi = sum(b * i for b, i, _ in rows)
    sbc = sum(b * c for b, _, c in rows)
    sic = sum(i * c for _, i, c in rows)
    det = sbb * sii - sbi * sbi
    if not det:
        return (sbc / sbb if sbb else 0.0), 0.0
    return (sbc * sii - sic * sbi) / det, (sic * sbb - sbc * sbi) / det
