"""A node's checks on the batches it is given, and its signature on what it records.

The scheduler asks the guard, in this order, before anything of a batch is
decoded or imported:

1. ``bad_signature``: with a secret, a batch must be signed with it (see
   ``taskfan.signing``); the raw fields are checked before they are parsed.
   Then ``replay``: a signed entry that is too old, or whose job ended, expired
   or has another nonce, is refused (``worker.core.replays``).
2. ``refusal``, once the entry is parsed: a pickle batch on a ``--no-pickle``
   node, a payload over ``max_batch_bytes``, a function outside the
   ``--allow`` list; and ``decoded_refusal``: a payload that would take more
   than ``max_decoded_bytes`` decoded, by an estimate from its bytes.

A refused batch goes to the dead-letter stream and its items are recorded as
failed with the reason, so its job still finishes. An unsigned or changed
batch is different: what it claims (job, batch, items) is untrusted. Its items
are recorded as failed only when its job exists, and that record is **not
signed**: a node never vouches for what a forger wrote. A producer with the
secret then gets a SignatureError for that batch; one without it (the usual
cause: a producer that was not given the secret) sees the items fail with
``BadSignature`` and the reason. See docs/security.md.

Then ``seal`` signs each result entry, and ``fit`` keeps it under
``max_batch_bytes`` by failing the items of its largest chunks.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from taskfan.callables import VALUE
from taskfan.errors import FunctionNotAllowed, SignatureError
from taskfan.limits import (
    DEFAULT_LIMITS,
    Limits,
    decoded_size,
    default_max_decoded,
    format_size,
)
from taskfan.protocol import BatchEntry
from taskfan.refs import check_allowed
from taskfan.settings import DEFAULT_RESULT_TTL, Settings
from taskfan.signing import Keyring
from worker.core.batches import Delivery
from worker.core.replays import replay_reason

log = logging.getLogger(__name__)

#: bytes a failed item's error takes in a record, beyond its message (an estimate)
ERROR_OVERHEAD = 64


class Guard:
    def __init__(
        self,
        keyring: Keyring | None = None,
        no_pickle: bool = False,
        allow: tuple[str, ...] = (),
        limits: Limits = DEFAULT_LIMITS,
        max_decoded_bytes: int | None = None,
        max_entry_age: int = DEFAULT_RESULT_TTL,
        clock: Callable[[], float] = time.time,
        allow_by_value: bool = False,
    ) -> None:
        self.keyring = keyring
        self.no_pickle = no_pickle
        self.allow = allow
        self.limits = limits
        #: what the items of the batches held may take decoded (taskfan.limits)
        self.max_decoded_bytes = max_decoded_bytes or default_max_decoded(limits.max_batch_bytes)
        #: seconds after its issue a signed entry is refused (worker.core.replays)
        self.max_entry_age = max_entry_age
        self.clock = clock
        #: with an allowlist, run functions sent by value too (taskfan.callables)
        self.allow_by_value = allow_by_value

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        return cls(
            Keyring.of(settings.secrets or None),
            settings.no_pickle,
            settings.allow,
            Limits(settings.max_item_bytes, settings.max_batch_bytes),
            settings.decoded_limit,
            settings.entry_age_limit,
            allow_by_value=settings.allow_by_value,
        )

    def describe(self) -> str:
        """One line for the node's log: what this node accepts."""
        if self.keyring is not None:
            ids = self.keyring.key_ids
            signing = f"signed batches only (key {ids[0]}, {len(ids)} accepted), signed results"
        else:
            signing = "unsigned batches accepted"
        parts = [
            signing,
            "pickle refused" if self.no_pickle else "pickle accepted",
            (
                f"functions from {', '.join(self.allow)} only"
                + (", and functions sent by value" if self.allow_by_value else "")
            )
            if self.allow
            else "any function",
            f"at most {format_size(self.limits.max_item_bytes)} per item and "
            f"{format_size(self.limits.max_batch_bytes)} per batch, "
            f"{format_size(self.max_decoded_bytes)} decoded held",
        ]
        return "; ".join(parts)

    def posture(self) -> dict[str, str]:
        """What this node accepts, for its record (``taskfan nodes``, ``status --json``,
        the dashboard): the key id it signs with ("" unsigned), whether it accepts
        pickle, and its allowlist (a JSON list; [] for any function)."""
        return {
            "signed": self.keyring.key_ids[0] if self.keyring is not None else "",
            "pickle": "refused" if self.no_pickle else "accepted",
            "allow": json.dumps(list(self.allow)),
        }

    def warnings(self, redis_url: str | None = None) -> list[str]:
        """Doors this node leaves open, each with its risk and its fix.

        A node that runs unsigned pickle batches runs whatever anyone who can
        write to its Redis sends: it says so at start, unless its Redis is a
        unix socket (``taskfan run``'s embedded server, in a private folder).
        """
        if self.keyring is not None or self.no_pickle:
            return []
        if self.allow:
            return [
                "--allow limits the functions batches name, but pickle batches are accepted "
                "unsigned, and unpickling alone can import and run anything: add --no-pickle "
                "or a secret (docs/security.md)"
            ]
        if redis_url is not None and redis_url.lower().startswith("unix://"):
            return []
        return [
            "this node is open: it runs unsigned pickle batches, so anyone who can write to "
            "its Redis can run any code here (unpickling runs code). Give producers and nodes "
            "a shared secret (TASKFAN_SECRET, --secret-file), or refuse pickle with "
            "--no-pickle (TASKFAN_NO_PICKLE=1) and name your task modules with --allow "
            "(docs/security.md#production-checklist)"
        ]

    def bad_signature(self, delivery: Delivery) -> str | None:
        """Why the entry's signature does not hold, or None (or no secret)."""
        if self.keyring is None or delivery.fields is None:
            return None
        try:
            self.keyring.verify_batch(delivery.queue.name, delivery.fields)
        except SignatureError as exc:
            return str(exc)
        return None

    def replay(self, delivery: Delivery) -> str | None:
        """Why a signed entry must not run (``worker.core.replays``), or None (or no secret)."""
        if self.keyring is None or delivery.fields is None:
            return None
        return replay_reason(delivery, self.max_entry_age, self.clock())

    def refusal(self, entry: BatchEntry) -> tuple[str, str] | None:
        """(error type, reason) when this node will not run the batch."""
        where = f"job {entry.job_id} batch {entry.field}"
        if self.no_pickle and entry.wrap == VALUE:
            return (
                "PickleRefused",
                f"{where}: its function was sent by value (pickled code), which this node "
                "refuses (--no-pickle, TASKFAN_NO_PICKLE): pass a function defined at the "
                "top level of a module the nodes can import, and the json codec",
            )
        if self.no_pickle and entry.codec == "pickle":
            return (
                "PickleRefused",
                f"{where}: uses the pickle codec, which this node refuses (--no-pickle, "
                "TASKFAN_NO_PICKLE): enqueue it with the json codec",
            )
        limit = self.limits.max_batch_bytes
        size = len(entry.payload) + len(entry.bound) + len(entry.initargs)
        if size > limit:
            what = (
                "payload, bound state and initargs are"
                if entry.initargs
                else "payload and bound state are"
                if entry.bound
                else "payload is"
            )
            return (
                "BatchTooLarge",
                f"{where}: its {what} {format_size(size)}, over this node's "
                f"max_batch_bytes ({format_size(limit)})",
            )
        # Decoded in every pool process that runs the batch: bounded like a payload.
        for name, blob in (("bound state", entry.bound), ("initargs", entry.initargs)):
            if blob:
                decoded, containers = decoded_size(entry.codec, blob)
                if decoded > self.max_decoded_bytes:
                    return (
                        "BatchTooLarge",
                        f"{where}: its {name} of {format_size(len(blob))} ({containers} "
                        f"containers) would take about {format_size(decoded)} decoded, over "
                        f"this node's max_decoded_bytes ({format_size(self.max_decoded_bytes)})",
                    )
        not_allowed = self.not_allowed(entry.fn_ref, entry.wrap)
        if not_allowed is not None:
            return "FunctionNotAllowed", f"{where}: {not_allowed}"
        return None

    def not_allowed(self, fn_ref: str, wrap: str = "") -> str | None:
        """Why this node's ``--allow`` list refuses the function (the one called,
        whatever wraps it; one sent by value unless ``--allow-by-value``), or None."""
        if wrap == VALUE:
            if not self.allow or self.allow_by_value:
                return None
            return (
                f"{fn_ref!r} was sent by value (code shipped through Redis), which a node "
                f"with an allowlist ({', '.join(self.allow)}) refuses unless it is started "
                "with --allow-by-value (TASKFAN_ALLOW_BY_VALUE): pass a function from an "
                "allowed module instead"
            )
        try:
            check_allowed(fn_ref, self.allow)
        except FunctionNotAllowed as exc:
            return str(exc)
        return None

    def decoded_refusal(
        self, entry: BatchEntry, size: int, containers: int, chunks: int = 0
    ) -> str | None:
        """Why a batch estimated at ``size`` bytes decoded (``taskfan.limits.decoded_size``)
        is refused, or None: no batch over max_decoded_bytes is ever decoded."""
        if size <= self.max_decoded_bytes:
            return None
        return (
            f"job {entry.job_id} batch {entry.field}: its payload of "
            f"{format_size(len(entry.payload))} ({containers} containers"
            f"{f', {chunks} chunks' if chunks > 1 else ''}) would take about "
            f"{format_size(size)} decoded, over this node's max_decoded_bytes "
            f"({format_size(self.max_decoded_bytes)})"
        )

    def can_record_failures(self, count: int, message: str) -> bool:
        """Whether ``count`` items failed with ``message`` fit in one result entry."""
        return count * (len(message.encode()) + ERROR_OVERHEAD) <= self.limits.max_batch_bytes

    def seal(self, entry: BatchEntry, result: bytes) -> bytes:
        """The result entry as recorded: signed when the node has a secret."""
        if self.keyring is None:
            return result
        return self.keyring.seal_result(entry.job_id, entry.field, entry.codec, result)

    def fit(
        self,
        blobs: dict[int, bytes],
        failures: dict[int, int],
        count: int,
        size: int,
        error_blob: Callable[[int, int, str], bytes],
    ) -> int:
        """Fail the items of the largest chunks until the result entry (``size``
        bytes now) fits ``max_batch_bytes``; returns how many more items failed.

        ``blobs`` and ``failures`` map each chunk's first offset to its blob and
        its failed items, and are updated; ``error_blob(lo, n, message)`` makes
        the blob of a chunk whose ``n`` items all fail.
        """
        limit = self.limits.max_batch_bytes
        starts = sorted(blobs)
        ends = dict(zip(starts, [*starts[1:], count], strict=True))
        message = (
            f"the results of this item's batch encode to {format_size(size)}, over the "
            f"node's max_batch_bytes ({format_size(limit)}); the items of its largest "
            "chunks of results fail instead: return large data by reference (a path or URL)"
        )
        more = 0
        for lo in sorted(starts, key=lambda lo: len(blobs[lo]), reverse=True):
            if size <= limit:
                break
            items = ends[lo] - lo
            new = error_blob(lo, items, message)
            size += len(new) - len(blobs[lo])
            blobs[lo] = new
            more += items - failures.get(lo, 0)
            failures[lo] = items
        return more
