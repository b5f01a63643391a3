"""Sources of batches are plug-ins (``worker.sources``): the node core names none.

- No module of the node outside the RQ package (``worker/sources/rq/``) says
  "RQ", in code or in words: the seam is where the protocol says it is.
- The registry finds each source's plugin, in order, without importing RQ.
- A node reads from a source it has never heard of: a fake one
  (``tests/fake_source.py``), handed in,
  whose batches it runs on a real pool, records through the source, and hands
  back to it on a graceful stop.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from functools import partial

from taskfan.keys import QueueKeys
from tests.cli_support import REPO
from tests.fake_source import FakeSource, fake_node
from tests.helpers import wait_until
from tests.test_node_inprocess import drive
from worker.core.batches import Delivery, key
from worker.node.node import Node
from worker.sources.registry import plugins

#: RQ as a word, or as part of a name (``rq_queues``, ``RqSource``, ``self._rq``)
RQ_WORD = re.compile(r"(?<![A-Za-z0-9])(?:rq|RQ|Rq)(?![a-z0-9])")


def test_the_pattern_finds_rq_in_its_forms() -> None:
    for text in ("import rq", "--rq-queue", "settings.rq_queues", "RqSource", "self._rq", "RQ's"):
        assert RQ_WORD.search(text), text
    for text in ("request", "irq", "required", "worker.sources", "rqa_", "Source"):
        assert not RQ_WORD.search(text), text


def test_no_module_of_the_node_outside_the_rq_package_names_rq() -> None:
    """The node, its core, its pool, its services and the other sources know no
    RQ: no import, no branch, no word (RQ lives in ``worker/sources/rq/``)."""
    worker = REPO / "worker"
    found = []
    for path in sorted(worker.rglob("*.py")):
        if path.is_relative_to(worker / "sources" / "rq"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if RQ_WORD.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_registry_finds_each_source_in_order() -> None:
    names = [plugin.name for plugin in plugins()]
    assert names[0] == "queue streams"  # asked first, listed first
    assert "RQ queues" in names


def test_reading_the_plugins_imports_no_source_library() -> None:
    code = (
        "import sys, worker.cli; from worker.sources.registry import plugins; plugins(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'rq'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------ a source the node never heard of

FAKE = QueueKeys("fake")


def _node(items: Sequence[Sequence[float]], **settings: object) -> tuple[Node, list[FakeSource]]:
    return fake_node(partial(FakeSource, batches=items, fields={"fake": "1"}), **settings)


def test_a_burst_node_runs_a_plugged_in_source_s_batches_and_records_them_through_it() -> None:
    node, (source,) = _node([[0.01, 0.02], [0.03]], burst=True)
    assert node.view.record()["fake"] == "1"  # its node record fields
    assert drive(node, lambda: None) == 0  # it ends once the source found nothing
    assert source.recorded == {b"fake-0": [0.01, 0.02], b"fake-1": [0.03]}
    assert sorted(source.started_items) == [(b"fake-0", 0, 1), (b"fake-0", 1, 2), (b"fake-1", 0, 1)]
    assert source.handed_back == [] and source.closed.is_set()
    assert node.stats.totals().batches == 0  # the source counts its own (written())


def test_a_stopping_node_hands_a_plugged_in_source_s_unstarted_batch_back_to_it() -> None:
    node, (source,) = _node([[1.5, 1.5], [1.5, 1.5]], grace_period=60)

    def stop_while_batch_1_waits() -> None:
        wait_until(
            lambda: len(node.scheduler.batches) == 2 and len(node.scheduler.in_pool) == 2,
            timeout=60,
            message="batch 0 in the pool, batch 1 held",
        )
        node.stop()

    assert drive(node, stop_while_batch_1_waits) == 0
    assert source.recorded == {b"fake-0": [1.5, 1.5]}
    assert source.handed_back == [b"fake-1"]
    assert key(Delivery(FAKE, b"fake-1", None)) not in node.scheduler.batches
