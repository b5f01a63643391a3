"""Functions this node cannot run, and what becomes of their batches.

A node started in the wrong folder, with an older release of the task package,
or with an ``--allow`` list that leaves a function out, cannot run functions
that other nodes serving the same queue can. Failing their items would throw
away work the others could do. Instead the node:

- notes the function and why (``note``: one WARNING per function, naming the
  import error or the refusal);
- hands every batch of it back at once (``Completed.handed_back``), its delivery count
  restored, so it uses up no delivery; other nodes reclaim it at their next
  check (``worker.sources.streams.held_entries``). A node cannot filter what XREADGROUP gives it, so
  this is how it stops taking the function's batches;
- publishes the functions in its node record (``cannot_run``), which ``taskfan
  nodes`` and the dashboard show;
- fails the items (``FunctionReferenceError``, or ``FunctionNotAllowed``, saying
  that no live node serving the queue can run the function) only once every
  live node serving the batch's queue has reported it: ``decide``, at each
  heartbeat, from the node records.

A single node that cannot import a function therefore fails its items within
about two heartbeats (its record is published, then its reclaim check takes
the batches back), and a cluster where one node of three cannot loses nothing.

The main thread calls ``note`` and ``verdict``; the heartbeat thread calls
``published`` and ``decide``, which replaces ``nobody`` whole (one store: no lock).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from taskfan.fields import queue_names

log = logging.getLogger(__name__)

#: functions a node record lists, at most, and characters of each reason
MAX_PUBLISHED = 20
MAX_REASON = 300
#: functions noted, at most: as many as a record lists, so that each reaches the
#: other nodes' ``decide``. Entries are untrusted, and each may name a function
#: of its own: past this, a function's items fail at once (``note`` says False)
#: instead of being remembered and handed back for ever.
MAX_TRACKED = MAX_PUBLISHED


@dataclass(frozen=True)
class Peer:
    """Another live node, as its record says: the queues it serves, and the
    functions it cannot run (reference -> reason)."""

    node_id: str
    queues: tuple[str, ...]
    cannot_run: dict[str, str]


class Unrunnable:
    def __init__(self, node_id: str = "this node") -> None:
        self.node_id = node_id
        #: function reference -> (error type, reason)
        self.cannot: dict[str, tuple[str, str]] = {}
        #: (queue, function) -> why no live node serving the queue can run it
        self.nobody: dict[tuple[str, str], str] = {}
        self._full = False

    def note(self, fn_ref: str, type_name: str, reason: str, queue: str) -> bool:
        """This node cannot run ``fn_ref``; the first time, say so (WARNING). False
        when MAX_TRACKED functions are noted already: fail its items instead."""
        if fn_ref in self.cannot:
            return True
        if len(self.cannot) >= MAX_TRACKED:
            if not self._full:
                self._full = True
                log.warning(
                    "node %s cannot run %d functions already; the items of any further "
                    "function it cannot run fail at once, without waiting for other nodes "
                    "(forged entries, or a node missing a package?)",
                    self.node_id, len(self.cannot),
                )  # fmt: skip
            return False
        self.cannot[fn_ref] = (type_name, reason)
        log.warning(
            "node %s cannot run %s (%s: %s): handing its batches back to nodes that can; "
            "its items fail only when no live node serving queue %s can run it",
            self.node_id, fn_ref, type_name, reason, queue,
            extra={"function": fn_ref},
        )  # fmt: skip
        return True

    def verdict(self, queue: str, fn_ref: str) -> tuple[str, str] | None:
        """None: run it (as far as this node knows). Otherwise (error type, message):
        an empty message means hand the batch back, a message means fail its items
        with it."""
        known = self.cannot.get(fn_ref)
        if known is None:
            return None
        return known[0], self.nobody.get((queue, fn_ref), "")

    def published(self) -> str:
        """The node record's ``cannot_run`` field: JSON, function -> reason."""
        shown = list(self.cannot.copy().items())[:MAX_PUBLISHED]
        return json.dumps({fn: f"{t}: {why}"[:MAX_REASON] for fn, (t, why) in shown})

    def decide(self, queues: Iterable[str], peers: Sequence[Peer]) -> None:
        """From the other live nodes' records: which (queue, function) no live node
        serving that queue can run (heartbeat thread)."""
        nobody: dict[tuple[str, str], str] = {}
        for fn_ref, (type_name, reason) in self.cannot.copy().items():
            for queue in queues:
                serving = [p for p in peers if queue in p.queues]
                if all(fn_ref in p.cannot_run for p in serving):
                    others = "; ".join(f"{p.node_id}: {p.cannot_run[fn_ref]}" for p in serving[:3])
                    tried = (
                        "this node alone serves it"
                        if not serving
                        else (f"all {len(serving) + 1} live nodes serving it report it")
                    )
                    nobody[(queue, fn_ref)] = (
                        f"no live node serving queue {queue} can run {fn_ref} ({tried}): "
                        f"{self.node_id}: {type_name}: {reason}" + (f"; {others}" if others else "")
                    )
        self.nobody = nobody


def parse_peer(node_id: str, queues: bytes | None, cannot_run: bytes | None) -> Peer:
    """A peer from its record's ``queues`` (a JSON list, or older nodes' comma
    list) and ``cannot_run`` fields; anything unreadable counts as nothing."""
    names = tuple(queue_names(queues))
    cannot: dict[str, str] = {}
    if cannot_run and len(cannot_run) < 65536:
        try:
            loaded = json.loads(cannot_run.decode("utf-8", "replace"))
        except (ValueError, RecursionError):  # anyone can write a record
            loaded = {}
        if isinstance(loaded, dict):
            cannot = {str(k): str(v) for k, v in loaded.items()}
    return Peer(node_id, names, cannot)
