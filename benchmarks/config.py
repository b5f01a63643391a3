"""What the suite measures: the scenarios, their grids, and the sizes (full or quick)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from benchmarks.peers import PEERS

#: the seed's three shapes, then the producer and node measurements, then RQ
#: queues drained by RQ's workers and by a taskfan node (issue 9)
THROUGHPUT = ("a", "b", "c")
EXTRAS = ("submit", "executor", "enqueue", "rss", "rqdrain")
ALL = THROUGHPUT + EXTRAS

#: (batch_size, chunksize); None: automatic
Setting = tuple[int | None, int | None]
AUTO: Setting = (None, None)


@dataclass(frozen=True)
class Scenario:
    """One throughput shape: ``items`` calls of ``task((v, num_calc))``."""

    name: str
    title: str
    items: int
    num_calc: int
    #: chunksizes of the local ProcessPoolExecutor(2).map
    local_chunksizes: tuple[int, ...]
    #: batch size of taskfan's chunksize sweep (the plot's taskfan line)
    sweep_batch: int
    #: taskfan's fixed (batch_size, chunksize) settings beyond the sweep
    extra_settings: tuple[Setting, ...]
    #: items RQ runs (it takes milliseconds per job); 0: RQ is not measured
    rq_items: int = 0
    #: items the peers' one-task-per-item variants (Dask per item) run; 0: all
    per_item_limit: int = 0

    @property
    def peer_chunksize(self) -> int:
        """The peers' chunks: 4 per worker process of 2, as taskfan's automatic
        sizes cut a job into (PEER_CHUNKS_PER_JOB chunks)."""
        return max(1, -(-self.items // PEER_CHUNKS_PER_JOB))

    def taskfan_settings(self) -> list[Setting]:
        """The sweep at ``sweep_batch``, the extra settings, and the automatic defaults."""
        sweep: list[Setting] = [
            (self.sweep_batch, c) for c in self.local_chunksizes if c <= self.sweep_batch
        ]
        return [*sweep, *self.extra_settings, AUTO]


@dataclass(frozen=True)
class Plan:
    """The sizes of one suite run: full, or quick for the smoke test."""

    scenarios: dict[str, Scenario]
    submit_calls: int
    round_trip_calls: int
    enqueue_items: int
    rss_first: int  #: items after which the node's RSS is read first ...
    rss_total: int  #: ... and the total after which it is read again
    rq_drain_jobs: int = 10_000  #: RQ jobs of task((v, rq_drain_num_calc)) drained per run
    rq_drain_num_calc: int = 1_000
    #: Executor.submit against ProcessPoolExecutor(2): a burst, and sequential round trips
    executor_calls: int = 10_000
    executor_round_trips: int = 500


CHUNKSIZES = (1, 10, 100, 1000)
#: the peers' chunked variants cut a job into this many chunks (4 per process)
PEER_CHUNKS_PER_JOB = 8
#: a setting whose runs all took longer than this many seconds ...
SLOW_SECONDS = 5.0
#: ... runs at most this many times (chunksize 1 on (c) takes 10 s a run)
SLOW_REPEATS = 3

FULL = Plan(
    scenarios={
        "a": Scenario(
            name="a",
            title="100 items x num_calc 100,000",
            items=100,
            num_calc=100_000,
            local_chunksizes=CHUNKSIZES,
            sweep_batch=100,
            extra_settings=((1, 1), (10, 1)),
        ),
        "b": Scenario(
            name="b",
            title="10,000 items x num_calc 1,000",
            items=10_000,
            num_calc=1_000,
            local_chunksizes=CHUNKSIZES,
            sweep_batch=1000,
            extra_settings=((100, 100), (5_000, 1_250), (10_000, 100)),
            rq_items=2_000,
            per_item_limit=2_000,
        ),
        "c": Scenario(
            name="c",
            title="100,000 no-op items (num_calc 0)",
            items=100_000,
            num_calc=0,
            local_chunksizes=CHUNKSIZES,
            sweep_batch=1000,
            extra_settings=((100, 100), (10_000, 1000), (25_000, 2_500), (50_000, 12_500)),
            rq_items=2_000,
            per_item_limit=2_000,
        ),
    },
    submit_calls=1000,
    round_trip_calls=200,
    enqueue_items=1_000_000,
    rss_first=100_000,
    rss_total=1_000_000,
)

#: a few items of everything, with the same code paths (RQ included)
QUICK = Plan(
    scenarios={
        "a": Scenario(
            name="a",
            title="4 items x num_calc 1,000",
            items=4,
            num_calc=1_000,
            local_chunksizes=(1, 2),
            sweep_batch=4,
            extra_settings=(),
        ),
        "b": Scenario(
            name="b",
            title="40 items x num_calc 100",
            items=40,
            num_calc=100,
            local_chunksizes=(1, 10),
            sweep_batch=10,
            extra_settings=((40, 10),),
            rq_items=10,
        ),
        "c": Scenario(
            name="c",
            title="200 no-op items",
            items=200,
            num_calc=0,
            local_chunksizes=(10, 100),
            sweep_batch=100,
            extra_settings=(),
            rq_items=10,
        ),
    },
    submit_calls=20,
    round_trip_calls=5,
    enqueue_items=2_000,
    rss_first=100,
    rss_total=1_000,
    rq_drain_jobs=50,
    rq_drain_num_calc=100,
    executor_calls=50,
    executor_round_trips=10,
)


@dataclass(frozen=True)
class Options:
    """One run of the suite, from the command line."""

    scenarios: tuple[str, ...] = ALL
    repeats: int = 7
    quick: bool = False
    rq: bool = True
    #: overrides the items RQ runs in (b) and (c)
    rq_items: int | None = None
    output: str = "benchmarks/results/latest.json"
    #: peers run beside taskfan on (a), (b), (c) (issue 18): celery, dask, ray
    peers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [s for s in self.scenarios if s not in ALL]
        if unknown:
            raise ValueError(f"unknown scenarios {unknown}: choose from {', '.join(ALL)}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {self.repeats}")
        unknown_peers = [p for p in self.peers if p not in PEERS]
        if unknown_peers:
            raise ValueError(f"unknown peers {unknown_peers}: choose from {', '.join(PEERS)}")
        if self.rq_items is not None and self.rq_items < 1:
            raise ValueError(f"rq_items must be at least 1, got {self.rq_items}")

    @property
    def plan(self) -> Plan:
        plan = QUICK if self.quick else FULL
        if self.rq_items is None:
            return plan
        scenarios = {
            name: dataclasses.replace(s, rq_items=self.rq_items if s.rq_items else 0)
            for name, s in plan.scenarios.items()
        }
        return dataclasses.replace(plan, scenarios=scenarios)
