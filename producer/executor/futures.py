"""What makes ``Executor``'s futures behave like ``ProcessPoolExecutor``'s.

- ``CallFuture``: the future of one ``submit``. Its ``cancel()`` asks Redis
  first (``taskfan/lua/cancel_call.lua``): a call no node has taken is deleted
  from the queue, and so never runs; a call a node holds cannot be cancelled,
  and the future is RUNNING, as the stdlib's is once its call is in the pool's
  call queue. A call a node handed back unrun (it could not run it, or
  stopped) waits in the queue again: ``cancel()`` takes it back too.
- The interpreter-exit hook: like ``concurrent.futures.process``, registered
  with ``threading._register_atexit`` (it runs before ``atexit`` handlers), it
  refuses new calls from then on and shuts down every live executor, waiting for
  its pending calls, whatever ``shutdown(wait=...)`` said.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures._base import PENDING, RUNNING
from concurrent.futures.process import _RemoteTraceback
from typing import Any, Protocol

import redis

from taskfan.boundary import reraise_interrupt
from taskfan.connection import RedisClient
from taskfan.errors import TaskFailed, TaskfanError

log = logging.getLogger(__name__)

#: at interpreter exit, how long the collector waits for an unreachable Redis
#: before it fails the pending futures (the exit would otherwise never end)
EXIT_PATIENCE = 10.0

#: set when the interpreter starts to exit: new calls are refused
_interpreter_exiting = False


class _Exits(Protocol):
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...


_live: weakref.WeakSet[Any] = weakref.WeakSet()


def register(executor: _Exits) -> None:
    """Shut ``executor`` down, waiting, when the interpreter exits (if it lives)."""
    _live.add(executor)


def check_accepting() -> None:
    if _interpreter_exiting:
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")


def exiting() -> bool:
    """Whether the interpreter has started to exit."""
    return _interpreter_exiting


def keep_waiting(r: RedisClient) -> bool:
    """Whether to go on waiting: always, except at interpreter exit with Redis
    unreachable (the exit would never end; the calls stay queued)."""
    if not exiting():
        return True
    try:
        r.ping()
    except (redis.RedisError, OSError):
        return False
    return True


def _python_exit() -> None:
    global _interpreter_exiting
    _interpreter_exiting = True
    for executor in list(_live):
        try:
            executor.shutdown(wait=True)
        except (TaskfanError, redis.RedisError) as exc:  # Redis went: nothing to wait for
            log.warning("at exit, an Executor's calls could not be waited for: %s", exc)


threading._register_atexit(_python_exit)  # type: ignore[attr-defined]


class CallFuture(Future[Any]):
    """A ``Future`` whose ``cancel()`` first takes its call back from the queue.

    ``take_back`` answers whether the call was taken back before any node read
    it; without one (a future built bare) this is the stdlib's ``Future``.
    """

    def __init__(self, take_back: Callable[[], bool] | None = None) -> None:
        super().__init__()
        self.take_back = take_back

    def start(self) -> bool:
        """``set_running_or_notify_cancel``, which a future already RUNNING (its
        cancel found a node had it) passes too: False if it was cancelled."""
        with self._condition:
            if self._state == RUNNING:
                return True
            return self.set_running_or_notify_cancel()

    def unstart(self) -> None:
        """The node that took the call handed it back unrun: PENDING again."""
        with self._condition:
            if self._state == RUNNING:
                self._state = PENDING

    def cancel(self) -> bool:
        """True when the call was taken back: no node had it, or the node that
        took it (the future RUNNING) handed it back unrun. A node has it: False,
        and the future is RUNNING."""
        with self._condition:
            if self._state in (PENDING, RUNNING) and self.take_back is not None:
                if not self.take_back():  # a node has it: running (or done) there
                    if self._state == PENDING:
                        self.set_running_or_notify_cancel()
                    return False
                self.take_back = None
                self._state = PENDING  # handed back: it was not running after all
            return super().cancel()  # under the lock still: the collector waits

    def cancel_taken_back(self) -> bool:
        """Cancel a future whose call was taken back already (with others)."""
        with self._condition:
            self.take_back = None
            if self._state == RUNNING:
                self._state = PENDING  # handed back: it was not running after all
            return super().cancel()


def raise_original(failed: TaskFailed) -> BaseException:
    """The exception to raise for a failed item: the remote one where we have it,
    with the remote traceback as its cause, in the stdlib's own type (so code
    that checks ``concurrent.futures.process._RemoteTraceback`` still does)."""
    if failed.exception is None:
        return failed
    exc = failed.exception
    try:
        exc.__cause__ = _RemoteTraceback(f'\n"""\n{failed.traceback}"""')  # type: ignore[arg-type]
    except BaseException as error:  # its class's own __setattr__ ran
        reraise_interrupt(error)
        return failed
    return exc
