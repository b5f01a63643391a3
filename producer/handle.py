"""The two seams of a job handle, as protocols, so imports run one way.

``JobClient`` is what a ``Job`` needs of the client it came from: the Redis
connection, the keyring, the size limits, which codec a job's results may be
read with, and where a function's cost read with them goes
(``producer.client.Client`` is one). ``JobHandle`` is what reading
results (``producer.reader``) and sending retries (``producer.retry``) need of
a job (``producer.job.Job`` is one). With them the library's imports form no
circle: ``client`` imports ``job``, which imports ``reader`` and ``retry``,
which import this module and never ``job`` or ``client``
(tests/test_import_graph.py).
"""

from __future__ import annotations

from typing import Protocol

from taskfan.codec import Codec
from taskfan.connection import RedisClient
from taskfan.keys import JobKeys
from taskfan.limits import Limits
from taskfan.meta import JobMeta
from taskfan.signing import Keyring


class JobClient(Protocol):
    """What a job handle needs of its client."""

    @property
    def redis(self) -> RedisClient: ...

    @property
    def keyring(self) -> Keyring | None: ...

    @property
    def limits(self) -> Limits: ...

    def result_codec(self, job_id: str, name: str, expected: str | None = None) -> Codec:
        """The codec to read the job's results with (``Client.result_codec``)."""
        ...

    def remember_cost(self, fn_ref: str, raw: bytes | None) -> None:
        """Keep a function's cost read with the results (``Client.remember_cost``)."""
        ...


class JobHandle(Protocol):
    """What reading a job's results and retrying its failures need of its handle."""

    @property
    def id(self) -> str: ...

    @property
    def codec(self) -> str | None: ...

    @property
    def keys(self) -> JobKeys: ...

    @property
    def fn_ref(self) -> str | None:
        """The job's function when the handle enqueued it; None when reattached."""
        ...

    @property
    def client(self) -> JobClient: ...

    def meta(self) -> JobMeta:
        """The job's meta, verified with a keyring (``Job.meta``)."""
        ...

    def meta_from(self, raw: dict[bytes, bytes]) -> JobMeta:
        """``meta`` of a meta hash read already (``Job.meta_from``)."""
        ...
