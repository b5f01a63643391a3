"""Scenarios (a), (b), (c): the local pool, taskfan, the peers and RQ, side by side.

Within a repeat every setting runs once, local and taskfan interleaved (the order
reverses on odd repeats, so neither side always runs right after the heavy
one); medians over the repeats go into the table. A setting slower than
SLOW_SECONDS runs only SLOW_REPEATS times. RQ runs in a phase of its own
(its workers are started for it and stopped after), alternating with taskfan's
automatic sizes on the same, reduced, item count. The peers (``--peers``: Celery,
Dask, Ray, each a warm cluster of its own) take turns with the local pool and
taskfan inside every repeat, like any other setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from benchmarks.config import AUTO, SLOW_REPEATS, SLOW_SECONDS, Scenario
from benchmarks.measure import Run
from benchmarks.peers import digest
from benchmarks.peers.cluster import PeerCluster
from benchmarks.runners import Items, make_items, settle_heap, time_local, time_taskfan
from producer import Client

Say = Callable[[str], None]
RQ_QUEUE = "taskfan-bench"


@dataclass
class ScenarioResult:
    scenario: Scenario
    local: list[Run]
    taskfan: list[Run]
    peers: list[Run] = dataclasses.field(default_factory=list)
    rq: Run | None = None
    #: taskfan's automatic sizes on RQ's item count, measured alongside it
    taskfan_rq_items: Run | None = None

    @property
    def local_best(self) -> Run:
        return min(self.local, key=lambda run: run.median)

    @property
    def taskfan_auto(self) -> Run:
        return next(run for run in self.taskfan if run.auto)

    @property
    def taskfan_best_fixed(self) -> Run:
        return min((run for run in self.taskfan if not run.auto), key=lambda run: run.median)

    def summary(self) -> dict[str, Any]:
        local, auto, fixed = self.local_best, self.taskfan_auto, self.taskfan_best_fixed
        summary: dict[str, Any] = {
            "local_best": local.to_json(),
            "taskfan_auto": auto.to_json(),
            "taskfan_best_fixed": fixed.to_json(),
            "ratio_auto_over_local_best": auto.median / local.median,
            "ratio_best_fixed_over_local_best": fixed.median / local.median,
            "ratio_auto_over_best_fixed": auto.median / fixed.median,
        }
        summary["peers"] = {
            run.label: dict(zip(("median", "worst"), run.ratio_to(local), strict=True))
            for run in self.peers
        }
        if self.rq is not None and self.taskfan_rq_items is not None:
            summary["ratio_rq_over_taskfan"] = self.rq.median / self.taskfan_rq_items.median
        return summary

    def to_json(self) -> dict[str, Any]:
        s = self.scenario
        return {
            "title": s.title,
            "items": s.items,
            "num_calc": s.num_calc,
            "local": [run.to_json() for run in self.local],
            "taskfan": [run.to_json() for run in self.taskfan],
            "peers": [run.to_json() for run in self.peers],
            "sweep_batch": s.sweep_batch,
            "rq": None
            if self.rq is None or self.taskfan_rq_items is None
            else {
                "items": self.rq.items,
                "reduced_from": s.items,
                "rq": self.rq.to_json(),
                "taskfan_auto": self.taskfan_rq_items.to_json(),
            },
            "summary": self.summary(),
        }


def measure_scenario(
    scenario: Scenario,
    client: Client,
    repeats: int,
    rq_url: str | None,
    say: Say,
    peers: Sequence[PeerCluster] = (),
) -> ScenarioResult:
    """Time every setting ``repeats`` times, the ``peers`` too; RQ too when
    ``rq_url`` is given."""
    items = make_items(scenario.items, scenario.num_calc)
    settle_heap()
    local = [Run("local", len(items), chunksize=c) for c in scenario.local_chunksizes]
    taskfan = [
        Run("taskfan", len(items), batch_size=b, chunksize=c)
        for b, c in scenario.taskfan_settings()
    ]
    peer_runs = _peer_runs(scenario, peers)
    clusters = {peer.name: peer for peer in peers}
    expected: list[Any] | None = None
    digests: dict[int, str] = {}
    for repeat in range(repeats):
        order = local + taskfan + peer_runs
        for run in order if repeat % 2 == 0 else order[::-1]:
            if repeat >= SLOW_REPEATS and min(run.seconds) > SLOW_SECONDS:
                continue
            if run.runner in clusters:
                assert expected is not None and run.variant is not None
                seconds, found = clusters[run.runner].time(
                    run.variant, run.items, scenario.num_calc, run.chunksize or 1
                )
                if run.items not in digests:
                    digests[run.items] = digest(expected[: run.items])
                if found != digests[run.items]:
                    raise RuntimeError(f"{run.label}: the results differ from the local pool's")
            elif run.runner == "local":
                assert run.chunksize is not None
                seconds, results = time_local(items, run.chunksize)
                expected = _check(expected, results, run)
            else:
                seconds, results = time_taskfan(client, items, (run.batch_size, run.chunksize))
                expected = _check(expected, results, run)
            run.seconds.append(seconds)
            say(f"({scenario.name}) {run.label}: {seconds:.3f}s")
    result = ScenarioResult(scenario, local, taskfan, peer_runs)
    if rq_url is not None and scenario.rq_items:
        assert expected is not None
        rq_items = items[: scenario.rq_items]
        result.rq, result.taskfan_rq_items = _measure_rq(
            rq_items, expected[: len(rq_items)], client, rq_url, repeats, scenario.name, say
        )
    return result


def _peer_runs(scenario: Scenario, peers: Sequence[PeerCluster]) -> list[Run]:
    """Every variant of every peer; one-task-per-item variants on at most
    ``per_item_limit`` items (the first ones: the same inputs)."""
    runs = []
    for peer in peers:
        for variant, description in peer.variants.items():
            per_item = variant == "items"
            count = scenario.items
            if per_item and scenario.per_item_limit:
                count = min(count, scenario.per_item_limit)
            runs.append(
                Run(
                    peer.name,
                    count,
                    chunksize=None if per_item else scenario.peer_chunksize,
                    variant=variant,
                    description=description,
                )
            )
    return runs


def _measure_rq(
    items: Items,
    expected: list[Any],
    client: Client,
    rq_url: str,
    repeats: int,
    name: str,
    say: Say,
) -> tuple[Run, Run]:
    from rq import Queue  # the bench extra: only when RQ is measured

    from benchmarks.rq_side import RQWorkers, time_rq

    rq_run = Run("rq", len(items))
    taskfan_run = Run("taskfan", len(items))
    with redis.Redis.from_url(rq_url) as connection:
        queue = Queue(RQ_QUEUE, connection=connection)
        workers = RQWorkers(rq_url, queue, count=2)
        try:
            workers.wait_ready()
            for repeat in range(repeats):
                if repeat >= SLOW_REPEATS and min(rq_run.seconds) > SLOW_SECONDS:
                    break
                seconds, results = time_rq(queue, items)
                _check(expected, results, rq_run)
                rq_run.seconds.append(seconds)
                say(f"({name}) {rq_run.label}: {seconds:.3f}s")
                seconds, results = time_taskfan(client, items, AUTO)
                _check(expected, results, taskfan_run)
                taskfan_run.seconds.append(seconds)
                say(f"({name}) taskfan, automatic sizes, {len(items):,} items: {seconds:.3f}s")
        finally:
            workers.stop()
    return rq_run, taskfan_run


def _check(expected: list[Any] | None, results: list[Any], run: Run) -> list[Any]:
    if expected is not None and results != expected:
        raise RuntimeError(f"{run.label}: the results differ from the local pool's")
    return results
