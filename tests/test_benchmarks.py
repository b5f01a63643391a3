"""The benchmark suite keeps working: ``python -m benchmarks --quick`` end to end.

RQ and the plot need the ``bench`` extra; without it the suite leaves RQ out
and the plot test is skipped. The quick run asks for the peers (``--peers``,
issue 18) too: CI does not install them (the ``peers`` extra), so there it
checks that each is skipped with the reason; where they are installed they
run at the quick sizes.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.__main__ import parse
from benchmarks.measure import Run
from benchmarks.peers import PEERS, REQUIRES, skip_reason
from benchmarks.report import markdown
from tests.workers import REPO


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """The JSON file, its content and the markdown of one ``--quick`` run (a few seconds)."""
    output = tmp_path_factory.mktemp("benchmarks") / "latest.json"
    args = ["-m", "benchmarks", "--quick", "--quiet", "--peers", "--output", str(output)]
    done = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,  # 120 s would do without the peers
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
    executor = data["executor"]  # Executor.submit beside ProcessPoolExecutor(2) (issue 18)
    assert executor["burst"]["ratio"]["worst"] >= executor["burst"]["ratio"]["median"] > 0
    assert executor["round_trip"]["taskfan"]["p50_ms"] > 0
    # the floor of any round trip through Redis and a process pool, same run
    floor = executor["floor"]
    assert floor["redis_p50_ms"] > 0 and floor["pool_p50_ms"] > 0
    assert floor["p50_ms"] == floor["redis_p50_ms"] + floor["pool_p50_ms"]
    assert "floor of a round trip" in markdown
    assert "`Executor.submit` burst" in markdown
    assert data["enqueue"]["generator"]["items_per_s"] > 0
    assert data["rss"]["after_total"]["tree_peak_mib"] > 0
    assert data["goals"]  # judged against the goals of issue 5
    assert "| (c)" in markdown
    for scenario in data["scenarios"].values():  # median and worst of every setting
        for run in scenario["local"] + scenario["taskfan"]:
            assert run["worst"] >= run["median"] > 0
            assert run["unsteady"] == (run["worst"] > 1.5 * run["median"])
    assert "### Unsteady settings" in markdown
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


def test_peers_run_or_are_skipped_with_the_reason(
    quick_run: tuple[Path, dict[str, Any], str],
) -> None:
    _, data, markdown_text = quick_run
    peers = data["peers"]
    assert set(peers["ran"]) | set(peers["skipped"]) == set(PEERS)
    for name in PEERS:
        installed = all(importlib.util.find_spec(m) is not None for m in REQUIRES[name])
        if name in peers["skipped"]:
            assert not installed or "failed to start" in peers["skipped"][name]
            assert f"- {name} skipped: " in markdown_text
        else:
            ran = [r for r in data["scenarios"]["b"]["peers"] if r["runner"] == name]
            assert ran and all(r["median"] > 0 for r in ran)
    assert "### Peers" in markdown_text


def test_peers_option_parses() -> None:
    assert parse(["--quick"])[0].peers == ()
    assert parse(["--peers"])[0].peers == PEERS
    assert parse(["--peers", "ray,celery,ray"])[0].peers == ("ray", "celery")
    with pytest.raises(SystemExit):
        parse(["--peers", "spark"])


def test_a_peer_not_installed_is_skipped_with_the_reason() -> None:
    absent = {"ray", "distributed"}
    find_spec = lambda module: None if module in absent else object()  # noqa: E731
    assert skip_reason("ray", find_spec) == "ray not installed (pip install -e '.[peers]')"
    assert skip_reason("dask", find_spec) == (
        "distributed not installed (pip install -e '.[peers]')"
    )
    assert skip_reason("celery", find_spec) is None


def test_unsteady_settings_are_flagged() -> None:
    steady = Run("local", 100, chunksize=10, seconds=[1.0, 1.1, 1.4])
    unsteady = Run("taskfan", 100, seconds=[1.0, 1.1, 1.7])
    assert not steady.unsteady and unsteady.unsteady
    assert unsteady.worst == 1.7 and unsteady.median == 1.1
    summary = {"local_best": steady.to_json(), "taskfan_auto": unsteady.to_json()}
    data = {
        "meta": {"repeats": 3},
        "scenarios": {
            "a": {
                "title": "t",
                "local": [steady.to_json()],
                "taskfan": [unsteady.to_json()],
                "peers": [],
                "summary": {
                    **summary,
                    "taskfan_best_fixed": {**steady.to_json(), "batch_size": 1},
                    "ratio_auto_over_local_best": 1.0,
                    "ratio_best_fixed_over_local_best": 1.0,
                    "ratio_auto_over_best_fixed": 1.0,
                },
            }
        },
        "peers": {"ran": [], "skipped": {"ray": "ray not installed"}, "versions": {}},
    }
    text = markdown(data)
    unsteady_part = text.split("### Unsteady settings")[1]
    assert "taskfan, automatic sizes | 1.55x | 1.000, 1.100, 1.700" in unsteady_part
    assert "chunksize 10" not in unsteady_part.split("###")[0]
    assert "- ray skipped: ray not installed" in text
