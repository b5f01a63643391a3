"""The suite's JSON, as markdown tables, and judged against the goals of issue 5.

Every setting shows its median and its worst run; a worst run over UNSTEADY
times the median is flagged, and listed under "Unsteady settings" (issue 18,
item 4). The peers (``--peers``) get a table of their own: each system's
median and worst against the best local chunksize of the same run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.config import SLOW_REPEATS, SLOW_SECONDS
from benchmarks.measure import UNSTEADY

Data = dict[str, Any]


def goals(data: Data) -> list[dict[str, Any]]:
    """Each goal that the measured parts of ``data`` can judge."""
    found: list[dict[str, Any]] = []

    def add(goal: str, target: str, measured: float, text: str, met: bool) -> None:
        found.append(
            {"goal": goal, "target": target, "measured": measured, "text": text, "met": met}
        )

    scenarios = data.get("scenarios", {})
    for name, limit in (("a", 1.10), ("b", 1.15)):
        if name in scenarios:
            ratio = scenarios[name]["summary"]["ratio_auto_over_local_best"]
            add(
                f"({name}) taskfan at automatic sizes vs the best local chunksize",
                f"<= {limit:.2f}x",
                ratio,
                f"{ratio:.2f}x",
                ratio <= limit,
            )
    if "c" in scenarios:
        rate = scenarios["c"]["summary"]["taskfan_auto"]["items_per_s"]
        add(
            "(c) taskfan end to end, automatic sizes",
            ">= 250,000 items/s",
            rate,
            f"{rate:,.0f} items/s",
            rate >= 250_000,
        )
    if "submit" in data:
        p50 = data["submit"]["enqueue_p50_ms"]
        add("`Client.submit` p50 (enqueue)", "<= 1 ms", p50, f"{p50:.3f} ms", p50 <= 1.0)
    if "executor" in data:
        ratio = data["executor"]["burst"]["ratio"]
        add(
            f"`Executor.submit` burst of {data['executor']['calls']:,} vs ProcessPoolExecutor(2)",
            "<= 1.50x (median and worst)",
            ratio["median"],
            f"{ratio['median']:.2f}x (worst {ratio['worst']:.2f}x)",
            ratio["worst"] <= 1.5,
        )
        trip = data["executor"]["round_trip"]["taskfan"]
        least = data["executor"]["floor"]["p50_ms"]
        add(
            "`Executor.submit` -> `result()` round trip p50",
            "<= 0.5 ms",
            trip["p50_ms"],
            f"{trip['p50_ms']:.3f} ms (worst run {trip['worst_p50_ms']:.3f} ms; "
            f"the floor of any round trip through Redis and a pool: {least:.3f} ms)",
            trip["p50_ms"] <= 0.5,
        )
    if "enqueue" in data:
        rate = data["enqueue"]["generator"]["items_per_s"]
        add(
            f"enqueue {data['enqueue']['items']:,} items (generator)",
            ">= 500,000 items/s",
            rate,
            f"{rate:,.0f} items/s",
            rate >= 500_000,
        )
    if "rss" in data:
        rss = data["rss"]
        ratio = rss["ratio_tree_peak"]
        add(
            f"node peak RSS after {rss['items_total']:,} vs {rss['items_first']:,} items",
            "<= 1.10x",
            ratio,
            f"{ratio:.3f}x",
            ratio <= 1.10,
        )
    for name in ("a", "b", "c"):
        if name in scenarios:
            ratio = scenarios[name]["summary"]["ratio_auto_over_best_fixed"]
            add(
                f"({name}) automatic sizes vs the best fixed taskfan setting",
                "<= 1.10x",
                ratio,
                f"{ratio:.2f}x",
                ratio <= 1.10,
            )
    return found


def markdown(data: Data) -> str:
    parts = []
    scenarios = data.get("scenarios", {})
    if scenarios:
        parts += [_runs_table(scenarios, data["meta"]["repeats"]), _summary_table(scenarios)]
    if "peers" in data:
        parts.append(_peers_table(scenarios, data["peers"]))
    if scenarios:
        parts.append(_unsteady_table(scenarios))
    extras = _extras_table(data)
    if extras:
        parts.append(extras)
    if "rq_drain" in data:
        parts.append(_rq_drain_table(data["rq_drain"]))
    if data.get("goals"):
        parts.append(_goals_table(data["goals"]))
    return "\n\n".join(parts) + "\n"


def _table(header: list[str], rows: list[list[str]], right_from: int = 1) -> str:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _runs_table(scenarios: Data, repeats: int) -> str:
    rows = []
    for name, scenario in scenarios.items():
        best = scenario["summary"]["local_best"]
        for run in scenario["local"] + scenario["taskfan"] + scenario.get("peers", []):
            rows.append([f"({name}) {scenario['title']}", _label(run), *_timing(run, best)])
        rq = scenario.get("rq")
        if rq:
            for run in (rq["rq"], rq["taskfan_auto"]):
                label = run["label"]
                if run["runner"] == "taskfan":
                    label += f", {run['items']:,} items (beside RQ)"
                rows.append([f"({name}) {scenario['title']}", label, *_timing(run, None)])
    slow = f", {SLOW_REPEATS} for settings over {SLOW_SECONDS:.0f} s" * (repeats > SLOW_REPEATS)
    title = (
        f"### Every setting (median and worst of {repeats} runs{slow}; ratio: median time / "
        f"best local median; worst / median over {UNSTEADY}x in bold)\n\n"
    )
    header = ["scenario", "runner, setting", "median s", "worst s", "worst / median"]
    return title + _table([*header, "items/s", "ratio"], rows, 2)


def _label(run: Data) -> str:
    if run["items"] and run.get("variant") == "items":
        return f"{run['label']} ({run['items']:,} items)"
    return str(run["label"])


def _timing(run: Data, best: Data | None) -> list[str]:
    ratio = "" if best is None else f"{_ratio(run, best, 'median'):.2f}x"
    spread = run.get("worst_over_median", 1.0)
    mark = "**" if run.get("unsteady") else ""
    return [
        f"{run['median']:.3f}",
        f"{run.get('worst', run['median']):.3f}",
        f"{mark}{spread:.2f}x{mark}",
        f"{run['items_per_s']:,.0f}",
        ratio,
    ]


def _ratio(run: Data, best: Data, key: str) -> float:
    """``run``'s time per item (its median or worst) over ``best``'s median per item:
    the plain time ratio when both ran the same items."""
    return float(run[key] / run["items"] / (best["median"] / best["items"]))


def _peers_table(scenarios: Data, peers: Data) -> str:
    """Issue 18, item 3: every system against the best local chunksize of the run."""
    rows = []
    for name, scenario in scenarios.items():
        best = scenario["summary"]["local_best"]
        auto = scenario["summary"]["taskfan_auto"]
        for run in [best, auto, *scenario.get("peers", [])]:
            rows.append(
                [
                    f"({name})",
                    _label(run),
                    f"{run['median']:.3f}",
                    f"{run['worst']:.3f}",
                    f"{_ratio(run, best, 'median'):.2f}x",
                    f"{_ratio(run, best, 'worst'):.2f}x",
                ]
            )
    lines = ["### Peers (ratio: time per item / best local chunksize's median time per item)", ""]
    versions = ", ".join(f"{n} {v}" for n, v in peers.get("versions", {}).items())
    if versions:
        lines.append(f"Ran: {versions}.")
    lines += [f"- {n} skipped: {why}" for n, why in peers.get("skipped", {}).items()]
    title = "\n".join(lines) + ("\n\n" if len(lines) > 2 else "")
    header = ["scenario", "system", "median s", "worst s", "median ratio", "worst ratio"]
    return title + _table(header, rows, 2)


def _unsteady_table(scenarios: Data) -> str:
    """Issue 18, item 4: every setting whose worst run is over UNSTEADY x its median."""
    rows = []
    for name, scenario in scenarios.items():
        rq = scenario.get("rq") or {}
        runs = [*scenario["local"], *scenario["taskfan"], *scenario.get("peers", [])]
        runs += [rq[key] for key in ("rq", "taskfan_auto") if key in rq]
        for run in runs:
            if run.get("unsteady"):
                times = ", ".join(f"{t:.3f}" for t in run["seconds"])
                rows.append([f"({name})", _label(run), f"{run['worst_over_median']:.2f}x", times])
    title = f"### Unsteady settings (worst run over {UNSTEADY}x the median)\n\n"
    if not rows:
        return title + "None in this run."
    return title + _table(["scenario", "runner, setting", "worst / median", "runs (s)"], rows, 2)


def _summary_table(scenarios: Data) -> str:
    rows = []
    for name, scenario in scenarios.items():
        s = scenario["summary"]
        local, auto, fixed = s["local_best"], s["taskfan_auto"], s["taskfan_best_fixed"]
        rq = scenario.get("rq")
        rq_cells = ["", "", ""]
        if rq:
            rq_cells = [
                f"{rq['rq']['items_per_s']:,.0f} ({rq['items']:,} items)",
                f"{rq['taskfan_auto']['items_per_s']:,.0f}",
                f"{s['ratio_rq_over_taskfan']:.1f}x",
            ]
        rows.append(
            [
                f"({name})",
                f"{local['median']:.3f}s (chunksize {local['chunksize']})",
                f"{auto['median']:.3f}s",
                f"{fixed['median']:.3f}s ({fixed['batch_size']:,} x {fixed['chunksize']:,})",
                f"{s['ratio_auto_over_local_best']:.2f}x",
                f"{s['ratio_best_fixed_over_local_best']:.2f}x",
                f"{s['ratio_auto_over_best_fixed']:.2f}x",
                *rq_cells,
            ]
        )
    header = [
        "scenario",
        "local best",
        "taskfan auto",
        "taskfan best fixed (batch x chunk)",
        "taskfan auto / local best",
        "taskfan best fixed / local best",
        "auto / best fixed",
        "RQ items/s",
        "taskfan auto items/s, same items",
        "RQ / taskfan time",
    ]
    return "### Summary\n\n" + _table(header, rows)


def _extras_table(data: Data) -> str:
    rows: list[list[str]] = []
    if "submit" in data:
        s = data["submit"]
        rows.append(
            [
                f"`Client.submit`, enqueue only ({s['calls']:,} sequential calls)",
                _pair(s, "enqueue", "ms"),
            ]
        )
        rows.append(
            [
                f"`Client.submit` -> result round trip ({s['round_trip_calls']:,} calls)",
                _pair(s, "round_trip", "ms"),
            ]
        )
    if "executor" in data:
        x = data["executor"]
        burst, trip = x["burst"], x["round_trip"]
        ours = burst["taskfan"]
        rows.append(
            [
                f"`Executor.submit` burst of {x['calls']:,} no-op calls, to the last result",
                f"taskfan {ours['median']:.3f}s (worst {ours['worst']:.3f}s)"
                f", ProcessPoolExecutor(2) {burst['local']['median']:.3f}s (worst "
                f"{burst['local']['worst']:.3f}s); ratio {burst['ratio']['median']:.2f}x "
                f"(worst {burst['ratio']['worst']:.2f}x)",
            ]
        )
        rows.append(
            [
                f"`Executor.submit(...).result()` round trip ({x['round_trip_calls']:,} calls)",
                f"taskfan p50 {trip['taskfan']['p50_ms']:.3f} ms (worst run "
                f"{trip['taskfan']['worst_p50_ms']:.3f} ms), p99 {trip['taskfan']['p99_ms']:.3f}"
                f" ms; ProcessPoolExecutor(2) p50 {trip['local']['p50_ms']:.3f} ms, p99 "
                f"{trip['local']['p99_ms']:.3f} ms",
            ]
        )
        least = x["floor"]
        rows.append(
            [
                "the floor of a round trip through Redis and a process pool: a Redis "
                "ping-pong between two processes, plus ProcessPoolExecutor(2)'s round trip",
                f"p50 {least['redis_p50_ms']:.3f} ms + {least['pool_p50_ms']:.3f} ms = "
                f"{least['p50_ms']:.3f} ms",
            ]
        )
    if "enqueue" in data:
        e = data["enqueue"]
        for kind in ("generator", "list"):
            rows.append(
                [
                    f"`Client.map` enqueue of {e['items']:,} items from a {kind}",
                    f"{e[kind]['items_per_s']:,.0f} items/s ({e[kind]['median']:.2f}s)",
                ]
            )
    if "rss" in data:
        r = data["rss"]
        for key, items in (
            ("ready", 0),
            ("after_first", r["items_first"]),
            ("after_total", r["items_total"]),
        ):
            m = r[key]
            what = "after the warm-up" if not items else f"after {items:,} items"
            rows.append(
                [
                    f"node peak RSS {what} (node process / with its {m['processes'] - 1} "
                    "child processes)",
                    f"{m['main_peak_mib']:.1f} / {m['tree_peak_mib']:.1f} MiB",
                ]
            )
    if not rows:
        return ""
    return "### Producer and node\n\n" + _table(["measurement", "value"], rows)


def _rq_drain_table(drain: Data) -> str:
    """Issue 9: an RQ queue drained by RQ's workers and by a taskfan node."""
    rows = [
        [run["label"], f"{run['median']:.3f}", f"{run['items_per_s']:,.0f}"]
        for run in (drain["rq"], drain["taskfan"])
    ]
    rows.append(["RQ's time / taskfan's time", f"{drain['ratio_rq_over_taskfan']:.1f}x", ""])
    title = (
        f"### RQ queue drained: {drain['jobs']:,} RQ jobs of task((v, "
        f"{drain['num_calc']:,})) (issue 9)\n\n"
    )
    return title + _table(["runner", "median s", "jobs/s"], rows)


def _pair(s: Data, prefix: str, unit: str) -> str:
    return (
        f"p50 {s[prefix + '_p50_' + unit]:.3f} {unit}, p99 {s[prefix + '_p99_' + unit]:.3f} {unit}"
    )


def _goals_table(found: list[Data]) -> str:
    mark: Callable[[bool], str] = lambda met: "met" if met else "**missed**"  # noqa: E731
    rows = [[g["goal"], g["target"], g["text"], mark(g["met"])] for g in found]
    return "### Goals (issue 5, items 2 and 3)\n\n" + _table(
        ["goal", "target", "measured", "result"], rows, 4
    )
