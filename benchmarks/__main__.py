"""``python -m benchmarks``: run the suite, print markdown tables, write JSON.

Run it from the repository root (worker nodes and pool processes import
``benchmarks.tasks`` from there)::

    .venv/bin/python -m benchmarks                       # everything, 7 runs each
    .venv/bin/python -m benchmarks --scenarios b,c --repeats 3
    .venv/bin/python -m benchmarks --quick               # tiny sizes: a smoke test
    .venv/bin/python -m benchmarks --scenarios a,b,c --peers   # Celery, Dask, Ray beside
    .venv/bin/python -m benchmarks --latency --repeats 5 # (b), (c) with 0-40 ms to Redis
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import latency, report, suite
from benchmarks.config import ALL, Options
from benchmarks.peers import PEERS, parse_peers

LATENCY_OUTPUT = "benchmarks/results/latency.json"


def parse(argv: Sequence[str]) -> tuple[Options, bool, tuple[float, ...] | None]:
    """The options, whether to be quiet, and the round trips of ``--latency`` (or None)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(ALL),
        help=f"comma-separated, from {','.join(ALL)} (default: all)",
    )
    parser.add_argument("--repeats", type=int, help="runs per setting (default 7; quick: 1)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the code")
    parser.add_argument("--no-rq", dest="rq", action="store_false", help="leave RQ out")
    parser.add_argument("--rq-items", type=int, help="items RQ runs in (b) and (c)")
    parser.add_argument(
        "--peers",
        nargs="?",
        const=",".join(PEERS),
        default="",
        metavar="LIST",
        help=f"also run peers on (a), (b), (c): {','.join(PEERS)} (default: all of them); "
        "one not installed is skipped with the reason",
    )
    parser.add_argument("--output", default=Options.output, help="JSON file (default: %(default)s)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no timings on stderr")
    parser.add_argument(
        "--latency",
        action="store_true",
        help="instead of the suite: (b) and (c) with round-trip delay between node and Redis",
    )
    parser.add_argument(
        "--rtts",
        default=",".join(map(str, latency.RTTS_MS)),
        help="round trips of --latency, in ms (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    rtts: tuple[float, ...] | None = None
    if args.latency:
        try:
            rtts = tuple(float(ms) for ms in args.rtts.split(",") if ms.strip())
        except ValueError:
            parser.error(f"--rtts: comma-separated milliseconds, got {args.rtts!r}")
        if not rtts or any(not 0 <= ms <= 1000 for ms in rtts) or 0 not in rtts:
            parser.error(f"--rtts: between 0 and 1000 ms, 0 included, got {args.rtts!r}")
        if args.output == Options.output:
            args.output = LATENCY_OUTPUT
    try:
        options = Options(
            scenarios=tuple(s.strip() for s in args.scenarios.split(",") if s.strip()),
            repeats=args.repeats or (1 if args.quick else Options.repeats),
            quick=args.quick,
            rq=args.rq,
            rq_items=args.rq_items,
            output=args.output,
            peers=parse_peers(args.peers),
        )
    except ValueError as exc:
        parser.error(str(exc))
    return options, args.quiet, rtts


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str]) -> int:
    options, quiet, rtts = parse(argv)
    tell = (lambda _: None) if quiet else say
    if rtts is not None:
        data = latency.run(options, rtts, tell)
        text = latency.markdown(data)
    else:
        data = suite.run(options, tell)
        text = report.markdown(data)
    output = Path(options.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(data, indent=1) + "\n")
    print(text)
    print(f"{data['meta']['elapsed_seconds']:.0f}s; JSON written to {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
