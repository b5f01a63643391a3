"""What ``Executor`` takes and gives as the stdlib's pool executors do: their
pool arguments refused alike, ``zip`` with a length for ``map``, and a failed
item raised as its own exception."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from producer.executor.futures import raise_original
from taskfan.errors import TaskFailed


def check_pool_arguments(initializer: Any, max_tasks_per_child: Any) -> None:
    """What ProcessPoolExecutor refuses, refused alike (same types, same words)."""
    if initializer is not None and not callable(initializer) and not isinstance(initializer, str):
        raise TypeError("initializer must be a callable")
    if max_tasks_per_child is not None:
        if not isinstance(max_tasks_per_child, int) or isinstance(max_tasks_per_child, bool):
            raise TypeError("max_tasks_per_child must be an integer")
        if max_tasks_per_child <= 0:
            raise ValueError("max_tasks_per_child must be >= 1")


def originals(values: Iterator[Any]) -> Iterator[Any]:
    """``values``, a failed item raised as its own exception (``raise_original``);
    closing this closes ``values``."""
    try:
        yield from values
    except TaskFailed as failed:
        exc = raise_original(failed)
        raise exc from exc.__cause__


class Zip:
    """``zip(*iterables)`` with a length when every iterable has one, so that
    the client sizes batches from it (zip() itself has no length)."""

    def __init__(self, iterables: tuple[Iterable[Any], ...]) -> None:
        self.iterables = iterables
        try:
            self._length: int | None = min(len(it) for it in iterables)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self._length = None

    def __iter__(self) -> Iterator[Any]:
        return zip(*self.iterables, strict=False)

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("the inputs have no length")
        return self._length
