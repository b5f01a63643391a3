"""The enqueue lease: a job being sent lives only while its producer does.

While a job is unsealed (``Client.map`` still consuming its items, or an
``Executor``'s shared job of ``submit`` calls), a ``LeaseKeeper`` thread renews
the job's ``lease_until`` every third of the lease (lua/lease.lua, in the
server's clock), however slowly the items come. A producer killed mid-enqueue
stops renewing it; once it lapses, the first node heartbeat or reader that sees
it ends the job ``abandoned`` (lua/abandon.lua): nodes skip the rest of its
batches and its keys get the result TTL, instead of a job "enqueuing" for ever.

A keeper that finds its job abandoned (the producer froze longer than the
lease) remembers it; the enqueue then stops with JobAbandoned.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from taskfan import scripts
from taskfan.connection import RedisClient
from taskfan.errors import JobAbandoned
from taskfan.keys import JobKeys
from taskfan.meta import JobMeta

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews one job's enqueue lease from a daemon thread until ``stop``."""

    def __init__(self, client: RedisClient, job: JobKeys, seconds: float) -> None:
        self.client = client
        self.job = job
        self.seconds = seconds
        self.abandoned = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"taskfan-lease-{job.id}", daemon=True
        )

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def running(self) -> bool:
        """Whether it still renews the lease (False once stopped, or once the
        job was sealed, ended or abandoned)."""
        return self._thread.is_alive()

    def check(self) -> None:
        """Raise JobAbandoned when the job was abandoned under its producer."""
        if self.abandoned:
            raise JobAbandoned(self.job.id)

    def _run(self) -> None:
        # The meta was written with a whole lease: the first renewal is due a third in.
        interval = self.seconds / 3
        wait = interval
        while not self._stop.wait(wait):
            try:
                code = scripts.renew_lease(self.client, self.job, self.seconds)
            except (redis.RedisError, OSError) as exc:
                # Redis away: try again soon; the lease has two more thirds to go.
                log.warning("job %s: renewing its enqueue lease failed: %s", self.job.id, exc)
                wait = min(1.0, interval)
                continue
            wait = interval
            if code == scripts.JOB_ABANDONED:
                self.abandoned = True
                log.warning(
                    "job %s: abandoned while still enqueuing (its lease of %gs lapsed)",
                    self.job.id,
                    self.seconds,
                )
                return
            if code != 1:
                return  # sealed, ended or gone: nothing left to keep alive


def settle(client: RedisClient, meta: JobMeta, reread: Callable[[], JobMeta]) -> JobMeta:
    """``meta``, or, when its enqueue lease has lapsed by this clock, the meta
    after ending it as abandoned (``reread()`` reads it again). Readers call it,
    so a job no node serves still ends."""
    if not meta.lease_lapsed:
        return meta
    scripts.abandon_if_lapsed(client, JobKeys(meta.id))
    new: JobMeta = reread()
    return new


def lease_field(seconds: float) -> dict[str, str]:
    """The meta field that starts a new unsealed job's lease (this clock; the
    keeper's first renewal moves it to the server's)."""
    return {"lease_until": f"{time.time() + seconds:.3f}"}
