"""The Python docs' ProcessPoolExecutor example (``is_prime``), on a taskfan cluster.

Run from the repository root, with worker nodes on the same Redis::

    TASKFAN_REDIS_URL=redis://localhost:6379/0 python examples/map_primes.py

``is_prime`` is defined in this script: it travels as the reference
``examples.map_primes:is_prime``, which nodes started in the repository root
(or the compose image, which holds ``examples/``) can import.
"""

from __future__ import annotations

import math
import os

from producer import Executor

REDIS_URL = os.environ.get("TASKFAN_REDIS_URL", "redis://localhost:6379/0")

PRIMES = [
    112272535095293,
    112582705942171,
    112272535095293,
    115280095190773,
    115797848077099,
    1099726899285419,
]


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n == 2:
        return True
    if n % 2 == 0:
        return False
    sqrt_n = math.isqrt(n)
    for i in range(3, sqrt_n + 1, 2):  # noqa: SIM110 (the docs' loop, as it was)
        if n % i == 0:
            return False
    return True


def main() -> None:
    with Executor(REDIS_URL) as executor:  # was: concurrent.futures.ProcessPoolExecutor()
        for number, prime in zip(PRIMES, executor.map(is_prime, PRIMES), strict=True):
            print(f"{number} is prime: {prime}")


if __name__ == "__main__":
    main()
