"""A real node over generated hostile tasks: random mixes, among good items, of
tasks that raise BaseException subclasses (SystemExit, KeyboardInterrupt,
GeneratorExit, a custom one), exceptions whose ``__str__`` or ``__repr__``
raise, results and exceptions the reader cannot unpickle or whose class it
cannot import, a result whose pickling raises SystemExit, and items that end
their process (``tests.tasks.hostile_or_crash``).

After every job: the node is still running, every item has exactly one
outcome, every good item's value is right, and every hostile item failed with
the error type ``tests.tasks.HOSTILE`` gives it.
"""

from __future__ import annotations

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer import Client
from tests.conftest import StartWorker
from tests.helpers import wait_until
from tests.tasks import CRASH, HOSTILE

GOOD = st.integers(0, 10_000)
#: at most one crashing item per job: each costs a pool restart and an isolation
mixes = st.lists(
    st.one_of(GOOD, st.sampled_from([*sorted(HOSTILE), CRASH])), min_size=1, max_size=14
).filter(lambda xs: xs.count(CRASH) <= 1)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mixes, st.integers(1, 6), st.integers(1, 4))
def test_a_node_survives_any_mix_of_hostile_items(
    r: redis.Redis, start_worker: StartWorker, mix: list[int], batch_size: int, chunksize: int
) -> None:
    if not start_worker.started or start_worker.started[-1].proc.poll() is not None:
        r.flushdb()  # what a dead node left behind must not hold up the next one
        start_worker(processes=2)
    node = start_worker.started[-1]
    job = Client(r).map(
        "tests.tasks:hostile_or_crash", mix, batch_size=batch_size, chunksize=chunksize
    )
    wait_until(
        lambda: job.wait(timeout=0.2) or node.proc.poll() is not None,
        timeout=60,
        message=lambda: f"job {job.id} did not finish; node log:\n{node.log()}",
    )
    assert node.proc.poll() is None, f"the node exited over {mix}:\n{node.log()[-3000:]}"
    outcomes = list(job.outcomes(timeout=10))
    assert [o.index for o in outcomes] == list(range(len(mix)))
    for outcome, x in zip(outcomes, mix, strict=True):
        if x >= 0:
            assert outcome.ok and outcome.value == x * x, (x, outcome)
        else:
            assert not outcome.ok and outcome.error is not None, (x, outcome)
            assert outcome.error.type == HOSTILE.get(x, "WorkerProcessDied"), (x, outcome)
    bad = [i for i, x in enumerate(mix) if x < 0]
    assert [o.index for o in job.errors(timeout=10)] == bad
    assert sorted(o.index for o in job.as_completed(timeout=10)) == list(range(len(mix)))
    # The node counts a value that only the reader cannot read as a success.
    node_failed = [i for i in bad if HOSTILE.get(mix[i]) != "UnreadableResult"]
    assert tuple(job.progress()) == (len(mix), len(node_failed), len(mix))
