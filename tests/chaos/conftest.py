"""Fixtures of the chaos suite: ``report`` prints a scenario's figures.

The figures reach the terminal even without ``-s`` (``capsys.disabled``), so a
plain ``pytest`` run shows what each scenario measured on this machine.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

Report = Callable[..., None]


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}s"
    if value is None:
        return "-"
    return str(value)


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Report:
    """``report("scenario", items=..., kills=..., ...)``: one line of figures.

    Floats are durations in seconds; None prints as "-".
    """

    def emit(scenario: str, **figures: object) -> None:
        text = ", ".join(f"{name.replace('_', ' ')} {_format(v)}" for name, v in figures.items())
        with capsys.disabled():
            print(f"\n[chaos] {scenario}: {text}")

    return emit
