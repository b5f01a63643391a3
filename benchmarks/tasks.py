"""The seed article's task, importable by pool processes, worker nodes and RQ workers."""

from __future__ import annotations


def task(params: tuple[float, int]) -> float:
    """``num_calc`` rounds of ``a = pow(a, a)`` from ``v`` in [0, 1) (never overflows)."""
    v, num_calc = params
    a = float(v)
    for _ in range(num_calc):
        a = pow(a, a)
    return a


def noop(x: object) -> object:
    """The call whose cost is all overhead: ``submit`` bursts and round trips."""
    return x
