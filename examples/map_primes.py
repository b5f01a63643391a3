"""The Python docs' ``ProcessPoolExecutor`` example (``is_prime``).

``examples/stdlib/map_primes.py`` is the standard library's program (the docs
write ``concurrent.futures.ProcessPoolExecutor()``; it is imported by name
here); ``examples/map_primes.py`` is the same program on a taskfan cluster: the
two differ in one line, the import of the executor (tests/test_examples.py
checks it). Run the taskfan one from the repository root, with worker nodes on
the same Redis::

    TASKFAN_REDIS_URL=redis://localhost:6379/0 python examples/map_primes.py

``is_prime`` travels as the reference ``examples.map_primes:is_prime``, which
nodes started in the repository root (or the compose image, which holds
``examples/``) can import.
"""

import math
from producer import Executor as ProcessPoolExecutor

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
    with ProcessPoolExecutor() as executor:
        for number, prime in zip(PRIMES, executor.map(is_prime, PRIMES)):  # noqa: B905
            print("%d is prime: %s" % (number, prime))  # noqa: UP031 (the docs' line)


if __name__ == "__main__":
    main()
