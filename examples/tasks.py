"""Task functions for the CLI examples: worker nodes import them by reference.

Run from the repository root, so that ``examples.tasks`` is importable::

    taskfan run examples.tasks:collatz_steps --input examples/inputs.jsonl
    taskfan run examples.tasks:pow_task --input pow.jsonl      # make_inputs.py pow
    taskfan run examples.tasks:is_prime --input examples/inputs.jsonl
"""

from __future__ import annotations

import math


def collatz_steps(n: int) -> int:
    """Steps of the Collatz sequence from ``n`` down to 1."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"collatz_steps needs a whole number of at least 1, got {n!r}")
    steps = 0
    while n != 1:
        n = 3 * n + 1 if n % 2 else n // 2
        steps += 1
    return steps


def is_prime(n: int) -> bool:
    """The Python docs' ProcessPoolExecutor example task."""
    if n < 2:
        return False
    if n == 2:
        return True
    if n % 2 == 0:
        return False
    return all(n % i for i in range(3, math.isqrt(n) + 1, 2))


def pow_task(params: list[float]) -> float:
    """The seed benchmark's task: ``num_calc`` rounds of ``a = a ** a``, v in [0, 1)."""
    v, num_calc = params
    a = float(v)
    for _ in range(int(num_calc)):
        a = pow(a, a)
    return a
