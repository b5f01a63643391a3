"""A node far from Redis keeps its pool busy (issue 19, item 1).

Across a network each round trip a node waits for with idle processes adds to
a job's time. So a node measures its round trip (``worker.sources.streams.round_trips``); reads
enough batches ahead that the work waiting covers it (``Scheduler.batches_wanted``);
and runs a batch read moments after it was added without first asking Redis
for its job's state (a batch just added belongs to a job that was active just
now: the same trust the state cache gives a job seen active within
``ACTIVE_FOR``). No timing is asserted: the decisions are.
"""

from __future__ import annotations

import pytest
import redis

from producer import Client
from taskfan.keys import JobKeys
from taskfan.settings import Settings
from tests import tasks
from tests.test_adaptive_sizes import FN, delivery
from tests.test_scheduler import drain
from worker.core.chunk_queue import (
    CHUNK_SECONDS,
    MOST_IN_POOL,
    POOL_WORK_SECONDS,
    READ_AHEAD_SECONDS,
)
from worker.core.chunk_sizing import ChunkSizer
from worker.core.scheduler import Scheduler
from worker.node.node import connect_node_redis
from worker.sources.streams.job_states import ABANDONED
from worker.sources.streams.redis_io import NodeRedis
from worker.sources.streams.round_trips import RoundTrips

SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret"
#: seconds an item: a quick function (about a tenth of seed workload (b)'s)
CHEAP = 1e-5


def measured(cost: float, processes: int = 2) -> ChunkSizer:
    sizer = ChunkSizer(processes)
    for _ in range(20):
        sizer.observe(FN, 1000, 1000 * cost, "earlier")
    return sizer


# ----------------------------------------------------------------- round trips


def test_the_round_trip_is_the_shortest_of_the_last_calls() -> None:
    trips = RoundTrips()
    assert trips.estimate() == 0.0  # nothing timed yet
    for seconds in (0.05, 0.041, 0.3, 0.045):
        trips.observe(seconds)
    assert trips.estimate() == 0.041  # a slow call (a large reply, a busy Redis) aside
    for _ in range(RoundTrips.SAMPLES):
        trips.observe(0.002)
    assert trips.estimate() == 0.002  # the network changed: the old samples are gone


# ----------------------------------------------------------------- reading ahead


def test_cheap_batches_are_read_ahead_up_to_a_tenth_of_a_second_of_work() -> None:
    s = Scheduler(2, measured(CHEAP))
    s.accept(delivery("c", 0, 2_000))  # 20 ms of work
    wanted = s.batches_wanted()
    assert (wanted + 1) * 2_000 * CHEAP >= READ_AHEAD_SECONDS * 2
    for index in range(1, wanted + 1):
        s.accept(delivery("c", index, 2_000))
    assert s.batches_wanted() == 0  # covered: no more, others' nodes need the rest


def test_far_from_redis_a_node_reads_batches_to_cover_its_round_trip() -> None:
    rtt = 0.1
    near, far = Scheduler(2, measured(CHEAP)), Scheduler(2, measured(CHEAP), round_trip=lambda: rtt)
    for s in (near, far):
        s.accept(delivery("c", 0, 2_500))  # 25 ms of work: far less than a round trip
    wanted = far.batches_wanted()
    assert wanted > near.batches_wanted()
    assert (wanted + 1) * 2_500 * CHEAP >= 2 * rtt * 2  # two round trips of both processes
    for index in range(1, wanted + 1):
        far.accept(delivery("c", index, 2_500))
    assert far.batches_wanted() == 0


def test_with_every_chunk_in_the_pool_the_next_batches_are_still_read_ahead() -> None:
    s = Scheduler(2, measured(CHEAP), round_trip=lambda: 0.1)
    s.accept(delivery("c", 0, 2_500, chunksize=1_250))  # two chunks: both go in at once
    drain(s)
    assert not s.pending and len(s.in_pool) == 2
    assert s.batches_wanted() > 1


def test_far_from_redis_dear_batches_are_still_read_one_at_a_time() -> None:
    s = Scheduler(2, measured(0.02), round_trip=lambda: 0.04)
    s.accept(delivery("b", 0, 100))  # 2 s of work: covers any round trip
    assert s.batches_wanted() == 0


def test_a_node_of_many_tiny_chunks_does_not_hoard_batches() -> None:
    """Chunks of one no-op item (``chunksize=1``): each costs the node far more to
    send and settle than its item's work. Counting the items alone, a node read
    batch after batch (64 per process: about 20 s of chunks on our machines) and
    left none for other nodes."""
    s = Scheduler(2, measured(2e-7))  # seed workload (c): 0.2 us an item
    index = 0
    s.accept(delivery("c", index, 1_000, chunksize=1))
    while (wanted := s.batches_wanted()) and index < 100:
        for _ in range(wanted):
            index += 1
            s.accept(delivery("c", index, 1_000, chunksize=1))
    held = index + 1
    assert held * 1_000 * CHUNK_SECONDS <= 2 * READ_AHEAD_SECONDS * 2
    assert held <= 4


def test_weighing_the_chunks_waiting_takes_a_look_per_job_not_per_chunk() -> None:
    """``batches_wanted`` runs on every turn of the node's loop: with thousands
    of chunks waiting, a pass over each of them made every chunk cost the node
    a pass over all the others (seed workload (c) at chunksize 1 went from
    15 s to many minutes)."""
    sizer = measured(2e-7)
    s = Scheduler(2, sizer)
    for index in range(3):
        s.accept(delivery(f"job{index}", 0, 2_000, chunksize=1))
    assert len(s.pending) == 6_000
    looks = 0
    job_cost = sizer.job_cost

    def counted(job_id: str) -> float | None:
        nonlocal looks
        looks += 1
        return job_cost(job_id)

    sizer.job_cost = counted  # type: ignore[method-assign]
    s.batches_wanted()
    assert looks <= 3 + 1  # a look per job waiting, and one for the last batch


def _job_ran(sizer: ChunkSizer, job_id: str, cost: float) -> ChunkSizer:
    """The job's own first items were measured at ``cost`` seconds each."""
    sizer.observe(FN, 10, 10 * cost, job_id)
    return sizer


def test_short_chunks_queue_deeper_in_the_pool() -> None:
    """Two chunks per process in the pool (one running, one queued) leave a
    process idle for a hand-off after each short chunk: chunksize 1 of no-op
    items ran at a third of the local pool's rate. While what waits in the pool
    is short work, more of it may wait there, up to ``MOST_IN_POOL`` a process."""
    s = Scheduler(2, _job_ran(measured(2e-7), "c", 2e-7))
    s.accept(delivery("c", 0, 1_000, chunksize=1))
    drain(s)
    assert len(s.in_pool) == MOST_IN_POOL * 2 > 2 * 2


def test_long_or_unmeasured_chunks_keep_two_a_process_in_the_pool() -> None:
    dear = Scheduler(2, _job_ran(measured(0.02), "b", 0.02))  # a chunk of one item: 20 ms
    dear.accept(delivery("b", 0, 100, chunksize=1))
    drain(dear)
    assert len(dear.in_pool) == 2 * 2
    unmeasured = Scheduler(2, ChunkSizer(2))
    unmeasured.accept(delivery("c", 0, 100, chunksize=1))
    drain(unmeasured)
    assert len(unmeasured.in_pool) == 2 * 2


def test_a_job_not_measured_yet_keeps_two_a_process_whatever_its_function_cost() -> None:
    """The function's cost is another job's: this job's items may cost far more
    (seed (a) after (c)), and a pool filled by a wrong estimate would hold
    seconds of work that a cancel or a retry due could not get ahead of."""
    s = Scheduler(2, measured(2e-7))  # "earlier" ran cheap items; "a" never ran
    s.accept(delivery("a", 0, 100, chunksize=1))
    drain(s)
    assert len(s.in_pool) == 2 * 2


def test_the_pool_holds_no_more_than_its_share_of_short_work() -> None:
    per_item = 1e-3  # a chunk of one item: 1 ms
    s = Scheduler(2, _job_ran(measured(per_item), "c", per_item))
    s.accept(delivery("c", 0, 100, chunksize=1))
    drain(s)
    assert 2 * 2 < len(s.in_pool) < MOST_IN_POOL * 2
    assert (len(s.in_pool) - 1) * per_item <= POOL_WORK_SECONDS * 2


def test_an_unmeasured_function_is_not_read_ahead_by_round_trip() -> None:
    s = Scheduler(2, ChunkSizer(2), round_trip=lambda: 0.04)
    s.accept(delivery("c", 0, 100, chunksize=50))
    assert s.batches_wanted() <= 1


# ----------------------------------------------------------------- state check


def _node(r: redis.Redis, **kwargs: object) -> NodeRedis:
    node = NodeRedis(r, ["default"], "n1", clock=lambda: 0.0, **kwargs)  # type: ignore[arg-type]
    node.prepare()
    return node


def test_a_batch_just_added_runs_without_a_state_round_trip(r: redis.Redis) -> None:
    node = _node(r, trust_fresh=True)
    node.sync_clock()
    Client(r).map(tasks.square, range(2), batch_size=1)
    r.config_resetstat()
    found = node.read(2, 0)
    assert [d.skip for d in found] == [None, None]
    assert all(d.job is not None and d.job.state == b"active" for d in found)
    assert "cmdstat_hmget" not in r.info("commandstats")


def test_an_older_batch_is_checked_first(r: redis.Redis) -> None:
    node = _node(r, trust_fresh=True)
    node.sync_clock()
    node.clock_offset = (node.clock_offset or 0.0) + 10 * NodeRedis.ACTIVE_FOR  # 10 s later
    job = Client(r).map(tasks.square, range(2), batch_size=1)
    r.hset(JobKeys(job.id).meta, "state", "cancelled")
    assert [d.skip for d in node.read(2, 0)] == ["the job was cancelled"] * 2


def test_without_the_server_s_clock_every_batch_is_checked(r: redis.Redis) -> None:
    node = _node(r, trust_fresh=True)  # no sync_clock: how old an entry is, is unknown
    job = Client(r).map(tasks.square, range(2), batch_size=1)
    r.hset(JobKeys(job.id).meta, "state", "cancelled")
    assert [d.skip for d in node.read(2, 0)] == ["the job was cancelled"] * 2


def test_a_node_with_a_secret_checks_every_batch(r: redis.Redis) -> None:
    """Signed entries are checked against their job's meta (nonce, state) before
    they run: a replay must not (worker.core.replays)."""
    settings = Settings(queues=("default",), secrets=(SECRET,))
    node = connect_node_redis(settings, r)
    node.prepare()
    node.sync_clock()
    job = Client(r).map(tasks.square, range(2), batch_size=1)
    r.hset(JobKeys(job.id).meta, "state", "cancelled")
    assert [d.skip for d in node.read(2, 0)] == ["the job was cancelled"] * 2


def test_reclaimed_batches_are_checked(r: redis.Redis) -> None:
    node = _node(r, trust_fresh=True)
    node.sync_clock()
    job = Client(r).map(tasks.square, range(2), batch_size=1)
    assert len(node.read(2, 0)) == 2
    r.hset(JobKeys(job.id).meta, "state", "cancelled")
    assert [d.skip for d in node.reclaim(2, 0)] == ["the job was cancelled"] * 2


def test_a_job_whose_batch_ran_unchecked_is_looked_up_at_the_next_beat(r: redis.Redis) -> None:
    """Its producer may have died mid-enqueue: the heartbeat's lookup finds it
    still enqueuing with its lease lapsed, and ends it as abandoned."""
    node = _node(r, trust_fresh=True)
    node.sync_clock()
    job = Client(r).map(tasks.square, range(2), batch_size=1)
    r.hset(JobKeys(job.id).meta, mapping={"sealed": "0", "lease_until": "1.0"})
    assert [d.skip for d in node.read(2, 0)] == [None, None]  # ran unchecked
    assert node.abandon_lapsed() == {job.id: ABANDONED}


@pytest.mark.cluster
def test_the_clock_is_read_and_fresh_batches_run_on_a_cluster_too(r: redis.Redis) -> None:
    node = _node(r, trust_fresh=True)
    node.sync_clock()  # TIME on the cluster's default node
    assert node.clock_offset is not None and abs(node.clock_offset) < 60
    assert node.round_trips.estimate() > 0
    Client(r).map(tasks.square, range(2), batch_size=1)
    found = node.read(2, 0)
    assert [d.skip for d in found] == [None, None]
    assert all(d.job is not None and d.job.state == b"active" for d in found)
