"""The error tree. Every error taskfan raises on purpose is a TaskfanError."""

from __future__ import annotations

from concurrent.futures import CancelledError
from concurrent.futures.process import BrokenProcessPool


class TaskfanError(Exception):
    """Base class of every error taskfan raises on purpose."""


class ConfigError(TaskfanError, ValueError):
    """A setting, option or environment variable has a value we cannot use."""


class BrokerUnavailable(TaskfanError, ConnectionError):
    """Redis could not be reached, refused our credentials, or dropped the connection."""


class FunctionReferenceError(TaskfanError, ValueError):
    """A function cannot travel by reference (``module:qualname``) or cannot be resolved."""


class EncodeError(TaskfanError, ValueError):
    """A value cannot be encoded with the job's codec."""


class ProtocolError(TaskfanError):
    """An entry read from Redis does not follow the taskfan protocol."""


class SignatureError(ProtocolError):
    """A signed message (batch entry, result entry, job meta) is unsigned, signed
    with an unknown key, or was changed after it was signed (see taskfan.signing)."""


class PickleRefused(TaskfanError):
    """Pickle was refused (``no_pickle``): pickle from Redis can run code."""


class BoundStateError(FunctionReferenceError):
    """The bound state of a callable (a partial's arguments, a method's object, a
    function sent by value) cannot be loaded on a node: that job's items fail,
    and the node keeps running the function for other jobs."""


class FunctionNotAllowed(FunctionReferenceError):
    """A function reference names a module outside the node's allowlist (``--allow``)."""


class LimitExceeded(TaskfanError, ValueError):
    """An item or a batch encodes to more bytes than ``max_item_bytes`` or
    ``max_batch_bytes`` allow."""


class InvalidInput(TaskfanError, ValueError):
    """An input record is malformed; names the file and line where known."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None):
        self.source = source
        self.line = line
        where = ""
        if source is not None:
            where = f"{source}:{line}: " if line is not None else f"{source}: "
        super().__init__(f"{where}{message}")


class JobNotFound(TaskfanError, LookupError):
    """No job with this id exists (never created, or expired after its result TTL)."""

    def __init__(self, job_id: str):
        self.job_id = job_id
        super().__init__(f"job {job_id} not found (never created, or its results expired)")


class JobCancelled(TaskfanError, CancelledError):
    """The job was cancelled before all of its items ran. With counts (``Job.wait``,
    ``taskfan wait``): ``done`` items have an outcome (``failed`` of them failed),
    ``cancelled`` have none and read as cancelled outcomes. A
    ``concurrent.futures.CancelledError`` too, so that code written for the
    stdlib's executors (whose ``map`` raises it for a cancelled call) catches it."""

    def __init__(self, job_id: str, counts: tuple[int, int, int] | None = None):
        self.job_id = job_id
        self.done: int | None = None  #: items with an outcome (None: not counted)
        self.failed: int | None = None  #: of those, items that failed
        self.cancelled: int | None = None  #: items with none, read as cancelled
        if counts is not None:
            self.done, self.failed, self.cancelled = counts
        super().__init__(f"job {job_id} was cancelled{_counted(counts)}")


def _counted(counts: tuple[int, int, int] | None) -> str:
    if counts is None:
        return ""
    done, failed, cancelled = counts
    return f": {done} items done, {failed} failed, {cancelled} cancelled"


class JobAbandoned(JobCancelled):
    """The job's producer stopped renewing its enqueue lease before it sent every
    batch (it was killed, or froze): the job ended ``abandoned``, the rest of its
    batches are skipped. A JobCancelled, so code that handles a cancelled job
    handles this one too."""

    def __init__(self, job_id: str, counts: tuple[int, int, int] | None = None):
        self.job_id = job_id
        self.done: int | None = None
        self.failed: int | None = None
        self.cancelled: int | None = None
        if counts is not None:
            self.done, self.failed, self.cancelled = counts
        TaskfanError.__init__(
            self,
            f"job {job_id} was abandoned: its producer stopped renewing its enqueue lease "
            "before sending every batch (killed or frozen mid-enqueue); its remaining "
            f"batches are skipped{_counted(counts)}",
        )


def job_ended(job_id: str, state: str, counts: tuple[int, int, int] | None = None) -> JobCancelled:
    """The error for a job that ended without finishing (``state``: cancelled or
    abandoned); ``counts``: items done, failed, cancelled, when known."""
    if state == "abandoned":
        return JobAbandoned(job_id, counts)
    return JobCancelled(job_id, counts)


class InitializerError(TaskfanError, BrokenProcessPool):
    """A job's initializer raised (or could not be loaded) in a pool process: the
    items of that job given to that process fail with it. A ``BrokenProcessPool``
    (so a ``BrokenExecutor``), which the standard library raises for the same
    fault; the pool itself is not broken, since other jobs share it
    (``worker.pool.process_setup``)."""


class TaskFailed(TaskfanError):
    """An item raised an exception on a worker node.

    Keeps the remote exception's type name, message and traceback text, and the
    exception object itself when the job's codec could carry it (pickle).
    """

    def __init__(
        self,
        job_id: str,
        index: int,
        type_name: str,
        message: str,
        traceback: str,
        exception: BaseException | None = None,
    ):
        self.job_id = job_id
        self.index = index
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.exception = exception
        super().__init__(f"item {index} of job {job_id} failed: {type_name}: {message}")

    def __str__(self) -> str:
        text = super().__str__()
        if self.traceback:
            text += "\n\nRemote traceback:\n" + self.traceback.rstrip()
        return text

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (
            type(self),
            (self.job_id, self.index, self.type_name, self.message, self.traceback, None),
        )
