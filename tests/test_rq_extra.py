"""RQ is an optional extra: ``pip install taskfan`` does not bring it, ``pip install
'taskfan[rq]'`` does, within the range the adapter supports; a node without RQ
serves taskfan's own queues, and one asked for ``--rq-queue`` says what to install.
Neither the producer nor a node imports RQ (or the metrics client) until asked."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from producer import Client
from tests import tasks
from tests.conftest import StartWorker
from tests.workers import REPO
from worker.sources.rq import adapter as rqa

#: a sitecustomize that makes ``import rq`` fail as if RQ were not installed
_NO_RQ = textwrap.dedent(
    """
    import sys

    class _NoRq:
        def find_spec(self, name, path=None, target=None):
            if name == "rq" or name.startswith("rq."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NoRq())
    """
)


@pytest.fixture
def no_rq(tmp_path: Path) -> dict[str, str]:
    """The environment of a process in which RQ cannot be imported."""
    (tmp_path / "sitecustomize.py").write_text(_NO_RQ)
    path = [str(tmp_path), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}


def _requirements() -> list[tuple[str, str, str]]:
    """taskfan's requirements as (name, version specifier, marker)."""
    found = []
    for line in importlib.metadata.requires("taskfan") or []:
        requirement, _, marker = line.partition(";")
        match = re.match(r"\s*([A-Za-z0-9_.-]+)(\[[^]]*\])?\s*(.*)", requirement)
        assert match is not None, line
        found.append((match[1].lower(), match[3].strip().strip("()"), marker.strip()))
    return found


def test_rq_is_required_only_by_extras() -> None:
    rq = [(spec, marker) for name, spec, marker in _requirements() if name == "rq"]
    assert rq, "the rq extra lists rq"
    assert all("extra ==" in marker for _, marker in rq), rq  # none for a plain install
    (spec,) = [spec for spec, marker in rq if re.search(r"extra == .rq.", marker)]
    (low, high) = rqa.SUPPORTED
    assert sorted(spec.replace(" ", "").split(",")) == sorted(
        [f">={low[0]}.{low[1]}", f"<{high[0]}"]
    ), "the rq extra's range is versions.SUPPORTED"


def test_the_core_install_is_small() -> None:
    """What a plain install brings (the producer's and the node's needs)."""
    core = {name for name, _, marker in _requirements() if not marker}
    assert core == {"redis", "click", "prometheus-client"}


def test_neither_the_producer_nor_a_node_imports_rq_or_the_metrics_client() -> None:
    code = (
        "import sys, producer, taskfan.cli, worker.cli, worker.node.node; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'rq', 'prometheus_client'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_rq_queues_without_rq_are_one_line_naming_the_extra(
    redis_url: str, no_rq: dict[str, str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "taskfan", "worker", "--redis-url", redis_url, "--rq-queue", "q"],
        cwd=REPO,
        env={**os.environ, **no_rq},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "pip install 'taskfan[rq]'" in lines[0] and "--rq-queue" in lines[0]
    assert "Traceback" not in done.stderr


def test_a_node_without_rq_serves_taskfans_queues(
    client: Client, start_worker: StartWorker, no_rq: dict[str, str]
) -> None:
    node = start_worker(env=no_rq)
    assert list(client.map(tasks.square, [1, 2, 3]).results(timeout=60)) == [1, 4, 9], node.log()
    assert "ModuleNotFoundError" not in node.log()
