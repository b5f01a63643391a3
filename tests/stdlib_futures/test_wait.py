"""CPython's ``WaitTests`` (``test_wait.py``), on a node."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures

from producer import Executor
from tests.stdlib_futures import calls
from tests.stdlib_futures.calls import FileEvent
from tests.stdlib_futures.conftest import (
    CANCELLED_AND_NOTIFIED_FUTURE,
    CANCELLED_FUTURE,
    EXCEPTION_FUTURE,
    SUCCESSFUL_FUTURE,
)

Event = Callable[[], FileEvent]


def test_20369(executor: Executor) -> None:
    future = executor.submit(calls.mul, 1, 2)
    done, not_done = futures.wait([future, future], return_when=futures.ALL_COMPLETED)
    assert done == {future}
    assert not_done == set()


def test_first_completed(executor: Executor, create_event: Event) -> None:
    event = create_event()
    future1 = executor.submit(calls.mul, 21, 2)
    future2 = executor.submit(calls.wait_for, event)  # ADAPTED: event.wait (calls.wait_for)
    try:
        done, not_done = futures.wait(
            [CANCELLED_FUTURE, future1, future2], return_when=futures.FIRST_COMPLETED
        )
        assert done == {future1}
        assert not_done == {CANCELLED_FUTURE, future2}
    finally:
        event.set()
    future2.result()  # wait for job to finish


def test_first_completed_some_already_completed(executor: Executor, create_event: Event) -> None:
    event = create_event()
    future1 = executor.submit(calls.wait_for, event)  # ADAPTED: event.wait
    try:
        finished, pending = futures.wait(
            [CANCELLED_AND_NOTIFIED_FUTURE, SUCCESSFUL_FUTURE, future1],
            return_when=futures.FIRST_COMPLETED,
        )
        assert finished == {CANCELLED_AND_NOTIFIED_FUTURE, SUCCESSFUL_FUTURE}
        assert pending == {future1}
    finally:
        event.set()
    future1.result()  # wait for job to finish


def test_first_exception(executor: Executor, create_event: Event) -> None:
    event1 = create_event()
    event2 = create_event()
    try:
        future1 = executor.submit(calls.mul, 2, 21)
        future2 = executor.submit(calls.wait_and_raise, event1)
        future3 = executor.submit(calls.wait_for, event2)  # ADAPTED: event2.wait

        # Ensure that future1 is completed before future2 finishes
        def wait_for_future1() -> None:
            future1.result()
            event1.set()

        t = threading.Thread(target=wait_for_future1)
        t.start()

        finished, pending = futures.wait(
            [future1, future2, future3], return_when=futures.FIRST_EXCEPTION
        )
        assert finished == {future1, future2}
        assert pending == {future3}
        t.join(timeout=60)
    finally:
        event1.set()
        event2.set()
    future3.result()  # wait for job to finish


def test_first_exception_some_already_complete(executor: Executor, create_event: Event) -> None:
    event = create_event()
    future1 = executor.submit(divmod, 21, 0)
    future2 = executor.submit(calls.wait_for, event)  # ADAPTED: event.wait
    try:
        finished, pending = futures.wait(
            [SUCCESSFUL_FUTURE, CANCELLED_FUTURE, CANCELLED_AND_NOTIFIED_FUTURE, future1, future2],
            return_when=futures.FIRST_EXCEPTION,
        )
        assert finished == {SUCCESSFUL_FUTURE, CANCELLED_AND_NOTIFIED_FUTURE, future1}
        assert pending == {CANCELLED_FUTURE, future2}
    finally:
        event.set()
    future2.result()  # wait for job to finish


def test_first_exception_one_already_failed(executor: Executor, create_event: Event) -> None:
    event = create_event()
    future1 = executor.submit(calls.wait_for, event)  # ADAPTED: event.wait
    try:
        finished, pending = futures.wait(
            [EXCEPTION_FUTURE, future1], return_when=futures.FIRST_EXCEPTION
        )
        assert finished == {EXCEPTION_FUTURE}
        assert pending == {future1}
    finally:
        event.set()
    future1.result()  # wait for job to finish


def test_all_completed(executor: Executor) -> None:
    future1 = executor.submit(divmod, 2, 0)
    future2 = executor.submit(calls.mul, 2, 21)
    finished, pending = futures.wait(
        [SUCCESSFUL_FUTURE, CANCELLED_AND_NOTIFIED_FUTURE, EXCEPTION_FUTURE, future1, future2],
        return_when=futures.ALL_COMPLETED,
    )
    assert finished == {
        SUCCESSFUL_FUTURE,
        CANCELLED_AND_NOTIFIED_FUTURE,
        EXCEPTION_FUTURE,
        future1,
        future2,
    }
    assert pending == set()


def test_timeout(executor: Executor, create_event: Event) -> None:
    short_timeout = 0.050
    event = create_event()
    future = executor.submit(calls.wait_for, event)  # ADAPTED: event.wait
    try:
        finished, pending = futures.wait(
            [CANCELLED_AND_NOTIFIED_FUTURE, EXCEPTION_FUTURE, SUCCESSFUL_FUTURE, future],
            timeout=short_timeout,
            return_when=futures.ALL_COMPLETED,
        )
        assert finished == {CANCELLED_AND_NOTIFIED_FUTURE, EXCEPTION_FUTURE, SUCCESSFUL_FUTURE}
        assert pending == {future}
    finally:
        event.set()
    future.result()  # wait for job to finish
