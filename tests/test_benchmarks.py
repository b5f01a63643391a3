"""The benchmark suite keeps working: ``python -m benchmarks --quick`` end to end.

RQ and the plot need the ``bench`` extra; without it the suite leaves RQ out
and the plot test is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.workers import REPO


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """The JSON file, its content and the markdown of one ``--quick`` run (a few seconds)."""
    output = tmp_path_factory.mktemp("benchmarks") / "latest.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--quiet", "--output", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return output, json.loads(output.read_text()), done.stdout


def test_quick_suite_writes_every_scenario(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    _, data, markdown = quick_run
    assert set(data["scenarios"]) == {"a", "b", "c"}
    for scenario in data["scenarios"].values():
        assert scenario["local"] and scenario["taskfan"]
        assert any(run["auto"] for run in scenario["taskfan"])
        assert scenario["summary"]["ratio_auto_over_local_best"] > 0
    has_rq = importlib.util.find_spec("rq") is not None
    for name in ("b", "c"):
        assert (data["scenarios"][name]["rq"] is not None) == has_rq
    assert data["submit"]["enqueue_p50_ms"] > 0
    assert data["enqueue"]["generator"]["items_per_s"] > 0
    assert data["rss"]["after_total"]["tree_peak_mib"] > 0
    assert data["goals"]  # judged against the goals of issue 5
    assert "| (c)" in markdown
    if has_rq:  # an RQ queue drained by RQ's workers and by a node (issue 9)
        drain = data["rq_drain"]
        assert drain["rq"]["median"] > 0 and drain["taskfan"]["median"] > 0
        assert drain["ratio_rq_over_taskfan"] > 0
        assert "### RQ queue drained" in markdown


@pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="matplotlib (the bench extra) is not installed",
)
def test_plot_from_the_json(quick_run: tuple[Path, dict[str, Any], str], tmp_path: Path) -> None:
    json_file, _, _ = quick_run
    png = tmp_path / "chunksize.png"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.plot", "--input", str(json_file), "--output", str(png)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert png.read_bytes().startswith(b"\x89PNG")
