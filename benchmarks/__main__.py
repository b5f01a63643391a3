"""``python -m benchmarks``: run the suite, print markdown tables, write JSON.

Run it from the repository root (worker nodes and pool processes import
``benchmarks.tasks`` from there)::

    .venv/bin/python -m benchmarks                       # everything, 7 runs each
    .venv/bin/python -m benchmarks --scenarios b,c --repeats 3
    .venv/bin/python -m benchmarks --quick               # tiny sizes: a smoke test
    .venv/bin/python -m benchmarks --scenarios a,b,c --peers   # Celery, Dask, Ray beside
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import report, suite
from benchmarks.config import ALL, Options
from benchmarks.peers import PEERS, parse_peers


def parse(argv: Sequence[str]) -> tuple[Options, bool]:
    """The options, and whether to be quiet."""
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
    args = parser.parse_args(argv)
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
    return options, args.quiet


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str]) -> int:
    options, quiet = parse(argv)
    data = suite.run(options, (lambda _: None) if quiet else say)
    output = Path(options.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(data, indent=1) + "\n")
    print(report.markdown(data))
    print(f"{data['meta']['elapsed_seconds']:.0f}s; JSON written to {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
