"""Write JSONL inputs for ``taskfan enqueue`` / ``taskfan run``, one item a line.

    python examples/make_inputs.py collatz 1000 > examples/inputs.jsonl
    python examples/make_inputs.py pow 100000 --num-calc 100 > pow.jsonl
    python examples/make_inputs.py primes 10000 -o primes.jsonl

collatz: the numbers 1..N shuffled (seeded); primes: N odd numbers around 10**12;
pow: N items ``[v, num_calc]`` with v in [0, 1), the pow benchmark's parameters.
The file streams out line by line: any N fits in flat memory.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterator
from typing import Any


def items(kind: str, count: int, num_calc: int, seed: int) -> Iterator[Any]:
    rng = random.Random(seed)
    if kind == "collatz":
        numbers = list(range(1, count + 1))
        rng.shuffle(numbers)
        yield from numbers
    elif kind == "primes":
        start = 10**12 + 1
        for i in range(count):
            yield start + 2 * i
    else:
        for _ in range(count):
            yield [rng.random(), num_calc]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["collatz", "primes", "pow"])
    parser.add_argument("count", type=int)
    parser.add_argument("--num-calc", type=int, default=100, help="pow: rounds per item")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", default="-", help="file to write; '-' is stdout")
    args = parser.parse_args(argv)
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
    try:
        for item in items(args.kind, args.count, args.num_calc, args.seed):
            out.write(json.dumps(item) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()


if __name__ == "__main__":
    main()
