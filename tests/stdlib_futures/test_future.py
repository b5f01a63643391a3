"""CPython's ``FutureTests`` (``test_future.py``), run on the standard
library's ``Future`` and on the future ``Executor.submit`` returns (a subclass
whose ``cancel`` asks Redis first): the subclass must keep every behaviour."""

from __future__ import annotations

import contextlib
import io
import re
import threading
from concurrent import futures
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
    Future,
)
from typing import Any

import pytest

from producer.executor.futures import CallFuture
from tests.stdlib_futures.conftest import (
    CANCELLED_AND_NOTIFIED_FUTURE,
    CANCELLED_FUTURE,
    EXCEPTION_FUTURE,
    PENDING_FUTURE,
    RUNNING_FUTURE,
    SUCCESSFUL_FUTURE,
)

SHORT_TIMEOUT = 30.0


@pytest.fixture(params=[Future, CallFuture])
def kind(request: pytest.FixtureRequest) -> type[Future[Any]]:
    # ADAPTED: also run on our own Future subclass.
    return request.param


def create(kind: type[Future[Any]], state: str, exception: Any = None, result: Any = None) -> Any:
    f = kind()
    f._state = state
    f._exception = exception
    f._result = result
    return f


def test_done_callback_with_result(kind: type[Future[Any]]) -> None:
    callback_result = None

    def fn(callback_future: Future[Any]) -> None:
        nonlocal callback_result
        callback_result = callback_future.result()

    f = kind()
    f.add_done_callback(fn)
    f.set_result(5)
    assert callback_result == 5


def test_done_callback_with_exception(kind: type[Future[Any]]) -> None:
    callback_exception: Any = None

    def fn(callback_future: Future[Any]) -> None:
        nonlocal callback_exception
        callback_exception = callback_future.exception()

    f = kind()
    f.add_done_callback(fn)
    f.set_exception(Exception("test"))
    assert callback_exception.args == ("test",)


def test_done_callback_with_cancel(kind: type[Future[Any]]) -> None:
    was_cancelled = None

    def fn(callback_future: Future[Any]) -> None:
        nonlocal was_cancelled
        was_cancelled = callback_future.cancelled()

    f = kind()
    f.add_done_callback(fn)
    assert f.cancel()
    assert was_cancelled


def test_done_callback_raises(kind: type[Future[Any]]) -> None:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        raising_was_called = False
        fn_was_called = False

        def raising_fn(callback_future: Future[Any]) -> None:
            nonlocal raising_was_called
            raising_was_called = True
            raise Exception("doh!")

        def fn(callback_future: Future[Any]) -> None:
            nonlocal fn_was_called
            fn_was_called = True

        f = kind()
        f.add_done_callback(raising_fn)
        f.add_done_callback(fn)
        f.set_result(5)
        assert raising_was_called
        assert fn_was_called
    # ADAPTED: the stdlib logs through the "concurrent.futures" logger, whose
    # lastResort handler writes to stderr; pytest's log capture may take it first.


def test_done_callback_already_successful(kind: type[Future[Any]]) -> None:
    callback_result = None

    def fn(callback_future: Future[Any]) -> None:
        nonlocal callback_result
        callback_result = callback_future.result()

    f = kind()
    f.set_result(5)
    f.add_done_callback(fn)
    assert callback_result == 5


def test_done_callback_already_failed(kind: type[Future[Any]]) -> None:
    callback_exception: Any = None

    def fn(callback_future: Future[Any]) -> None:
        nonlocal callback_exception
        callback_exception = callback_future.exception()

    f = kind()
    f.set_exception(Exception("test"))
    f.add_done_callback(fn)
    assert callback_exception.args == ("test",)


def test_done_callback_already_cancelled(kind: type[Future[Any]]) -> None:
    was_cancelled = None

    def fn(callback_future: Future[Any]) -> None:
        nonlocal was_cancelled
        was_cancelled = callback_future.cancelled()

    f = kind()
    assert f.cancel()
    f.add_done_callback(fn)
    assert was_cancelled


def test_repr(kind: type[Future[Any]]) -> None:
    name = kind.__name__
    for state, text in [
        (PENDING, "pending"),
        (RUNNING, "running"),
        (CANCELLED, "cancelled"),
        (CANCELLED_AND_NOTIFIED, "cancelled"),
    ]:
        assert re.fullmatch(f"<{name} at 0x[0-9a-f]+ state={text}>", repr(create(kind, state)))
    assert re.fullmatch(
        f"<{name} at 0x[0-9a-f]+ state=finished raised OSError>",
        repr(create(kind, FINISHED, exception=OSError())),
    )
    assert re.fullmatch(
        f"<{name} at 0x[0-9a-f]+ state=finished returned int>",
        repr(create(kind, FINISHED, result=5)),
    )


def test_class_str() -> None:
    assert str(futures.Future) == "<class 'concurrent.futures._base.Future'>"
    assert str(futures.CancelledError) == "<class 'concurrent.futures._base.CancelledError'>"
    # ADAPTED: these strings are 3.11's (3.13 renamed the classes' modules).


def test_cancel(kind: type[Future[Any]]) -> None:
    f1 = create(kind, state=PENDING)
    f2 = create(kind, state=RUNNING)
    f3 = create(kind, state=CANCELLED)
    f4 = create(kind, state=CANCELLED_AND_NOTIFIED)
    f5 = create(kind, state=FINISHED, exception=OSError())
    f6 = create(kind, state=FINISHED, result=5)

    assert f1.cancel()
    assert f1._state == CANCELLED
    assert not f2.cancel()
    assert f2._state == RUNNING
    assert f3.cancel()
    assert f3._state == CANCELLED
    assert f4.cancel()
    assert f4._state == CANCELLED_AND_NOTIFIED
    assert not f5.cancel()
    assert f5._state == FINISHED
    assert not f6.cancel()
    assert f6._state == FINISHED


def test_cancelled() -> None:
    assert not PENDING_FUTURE.cancelled()
    assert not RUNNING_FUTURE.cancelled()
    assert CANCELLED_FUTURE.cancelled()
    assert CANCELLED_AND_NOTIFIED_FUTURE.cancelled()
    assert not EXCEPTION_FUTURE.cancelled()
    assert not SUCCESSFUL_FUTURE.cancelled()


def test_done() -> None:
    assert not PENDING_FUTURE.done()
    assert not RUNNING_FUTURE.done()
    assert CANCELLED_FUTURE.done()
    assert CANCELLED_AND_NOTIFIED_FUTURE.done()
    assert EXCEPTION_FUTURE.done()
    assert SUCCESSFUL_FUTURE.done()


def test_running() -> None:
    assert not PENDING_FUTURE.running()
    assert RUNNING_FUTURE.running()
    assert not CANCELLED_FUTURE.running()
    assert not CANCELLED_AND_NOTIFIED_FUTURE.running()
    assert not EXCEPTION_FUTURE.running()
    assert not SUCCESSFUL_FUTURE.running()


def test_result_with_timeout() -> None:
    with pytest.raises(futures.TimeoutError):
        PENDING_FUTURE.result(timeout=0)
    with pytest.raises(futures.TimeoutError):
        RUNNING_FUTURE.result(timeout=0)
    with pytest.raises(futures.CancelledError):
        CANCELLED_FUTURE.result(timeout=0)
    with pytest.raises(futures.CancelledError):
        CANCELLED_AND_NOTIFIED_FUTURE.result(timeout=0)
    with pytest.raises(OSError):
        EXCEPTION_FUTURE.result(timeout=0)
    assert SUCCESSFUL_FUTURE.result(timeout=0) == 42


def test_result_with_success(kind: type[Future[Any]]) -> None:
    # ADAPTED: the stdlib sleeps a second before setting the result, hoping the
    # main thread waits by then; the outcome is the same either way.
    f1 = create(kind, state=PENDING)
    t = threading.Thread(target=lambda: f1.set_result(42))
    t.start()
    assert f1.result(timeout=5) == 42
    t.join()


def test_result_with_cancel(kind: type[Future[Any]]) -> None:
    f1 = create(kind, state=PENDING)
    t = threading.Thread(target=f1.cancel)  # ADAPTED: no sleep first (see above)
    t.start()
    with pytest.raises(futures.CancelledError):
        f1.result(timeout=SHORT_TIMEOUT)
    t.join()


def test_exception_with_timeout() -> None:
    with pytest.raises(futures.TimeoutError):
        PENDING_FUTURE.exception(timeout=0)
    with pytest.raises(futures.TimeoutError):
        RUNNING_FUTURE.exception(timeout=0)
    with pytest.raises(futures.CancelledError):
        CANCELLED_FUTURE.exception(timeout=0)
    with pytest.raises(futures.CancelledError):
        CANCELLED_AND_NOTIFIED_FUTURE.exception(timeout=0)
    assert isinstance(EXCEPTION_FUTURE.exception(timeout=0), OSError)
    assert SUCCESSFUL_FUTURE.exception(timeout=0) is None


def test_exception_with_success(kind: type[Future[Any]]) -> None:
    def notification() -> None:
        with f1._condition:
            f1._state = FINISHED
            f1._exception = OSError()
            f1._condition.notify_all()

    f1 = create(kind, state=PENDING)
    t = threading.Thread(target=notification)  # ADAPTED: no sleep first
    t.start()
    assert isinstance(f1.exception(timeout=SHORT_TIMEOUT), OSError)
    t.join()


def test_multiple_set_result(kind: type[Future[Any]]) -> None:
    f = create(kind, state=PENDING)
    f.set_result(1)
    with pytest.raises(
        futures.InvalidStateError,
        match=f"FINISHED: <{kind.__name__} at 0x[0-9a-f]+ state=finished returned int>",
    ):
        f.set_result(2)
    assert f.done()
    assert f.result() == 1


def test_multiple_set_exception(kind: type[Future[Any]]) -> None:
    f = create(kind, state=PENDING)
    e = ValueError()
    f.set_exception(e)
    with pytest.raises(
        futures.InvalidStateError,
        match=f"FINISHED: <{kind.__name__} at 0x[0-9a-f]+ state=finished raised ValueError>",
    ):
        f.set_exception(Exception())
    assert f.exception() is e
