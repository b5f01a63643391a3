"""Throughput against chunksize, for the local pool and for taskfan, from the JSON.

    .venv/bin/python -m benchmarks.plot [--input benchmarks/results/latest.json]
                                        [--output docs/performance-chunksize.png]

One panel per scenario: items/s of ``ProcessPoolExecutor(2).map`` (pool start-up
included) and of taskfan at the scenario's sweep batch size, against the
chunksize; taskfan's automatic sizes and RQ (on its own item count) as
horizontal lines.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

DEFAULT_INPUT = "benchmarks/results/latest.json"
DEFAULT_OUTPUT = "docs/performance-chunksize.png"


def plot(data: dict[str, Any], output: Path) -> None:
    scenarios = data.get("scenarios", {})
    if not scenarios:
        raise ValueError("the JSON has no throughput scenarios to plot")
    fig = Figure(figsize=(5.2 * len(scenarios), 4.6))
    axes = fig.subplots(1, len(scenarios), squeeze=False)
    for ax, (name, scenario) in zip(axes[0], scenarios.items(), strict=True):
        local = sorted((r["chunksize"], r["items_per_s"]) for r in scenario["local"])
        sweep = sorted(
            (r["chunksize"], r["items_per_s"])
            for r in scenario["taskfan"]
            if r["batch_size"] == scenario["sweep_batch"] and r["chunksize"] is not None
        )
        auto = next(r for r in scenario["taskfan"] if r["auto"])
        ax.plot(*zip(*local, strict=True), "o-", label="local ProcessPoolExecutor(2)")
        ax.plot(
            *zip(*sweep, strict=True),
            "s-",
            label=f"taskfan, batch {scenario['sweep_batch']:,}, node of 2 processes",
        )
        ax.axhline(auto["items_per_s"], color="C2", ls="--", label="taskfan, automatic sizes")
        rq = scenario.get("rq")
        if rq:
            ax.axhline(
                rq["rq"]["items_per_s"],
                color="C3",
                ls=":",
                label=f"RQ, 2 SimpleWorkers ({rq['items']:,} items)",
            )
        _axes(ax, [c for c, _ in local])
        ax.set_title(f"({name}) {scenario['title']}", fontsize=10)
        ax.set_xlabel("chunksize (items per pool message)")
        ax.set_ylabel("items/s, end to end")
        ax.legend(fontsize=7, loc="best")
    meta = data.get("meta", {})
    fig.suptitle(
        f"Throughput against chunksize: median of {meta.get('repeats', '?')} runs, "
        f"{meta.get('cpus', '?')} CPUs, Python {meta.get('python', '?')}",
        fontsize=11,
    )
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)


def _axes(ax: Axes, chunksizes: list[int]) -> None:
    """Log scales labelled with plain numbers, denser when the range is narrow."""
    plain = FuncFormatter(lambda value, _: f"{value:,.0f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(chunksizes)
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(NullFormatter())
    low, high = ax.get_ylim()
    decades = math.log10(high / low)
    subs = range(1, 10) if decades < 1 else (1, 2, 3, 5) if decades < 4 else (1,)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=[float(s) for s in subs]))
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="major", alpha=0.3)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__)
    parser.add_argument("--input", default=DEFAULT_INPUT, help="default: %(default)s")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="default: %(default)s")
    args = parser.parse_args(argv)
    data = json.loads(Path(args.input).read_text())
    plot(data, Path(args.output))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
