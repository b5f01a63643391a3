"""Every Redis key taskfan uses, built in one place.

Keys carry hash tags so that each multi-key command or script touches one slot:

- queue slot ``{q:NAME}``: ``stream`` (batches; consumer group ``workers``),
  ``dead`` (dead letters), ``jobs`` (zset of job id -> created time).
- job slot ``{j:ID}``: ``meta`` (hash), ``results`` (hash: batch index -> result
  entry), ``events`` (stream of recorded batches and job state changes).
- nodes: ``nodes`` (zset of node id -> last heartbeat) and one hash per node.
- ``cost:FN``: the seconds per item nodes measured for function FN (a string
  with a TTL), which producers read to size batches.

No script or transaction spans a queue slot and a job slot. Nothing outside this
module writes a key string.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "taskfan"
GROUP = "workers"
#: the consumer that a node hands back the entries it will not run to (XCLAIM
#: with a large idle time): other nodes reclaim them from it, and a future's
#: cancel() may still take a call back from it (lua/cancel_call.lua). Node ids
#: hold no colon, so no node is ever this consumer.
HANDED_BACK = f"{PREFIX}:handed-back"
NODES = f"{PREFIX}:nodes"
QUEUES = f"{PREFIX}:queues"


#: what a name may not hold (a set: names are checked once per key built, often)
_FORBIDDEN = frozenset("{}: \t\r\n")


def _check_name(kind: str, name: str) -> str:
    if not name or not _FORBIDDEN.isdisjoint(name):
        raise ValueError(
            f"invalid {kind} name {name!r}: use a non-empty name without braces, "
            "colons or whitespace"
        )
    problem = not_utf8(name)
    if problem:
        raise ValueError(f"invalid {kind} name {name!r}: {problem}")
    return name


def not_utf8(text: str) -> str | None:
    """Why ``text`` cannot go to Redis, or None. A byte that is not UTF-8 in argv
    or the environment reaches Python as a lone surrogate (``'q\\udcff'``)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return (
            "not valid UTF-8 text (a byte that is not UTF-8, from the command line or the "
            "environment?)"
        )
    return None


@dataclass(frozen=True)
class QueueKeys:
    """The keys of one queue, all in the slot ``{q:NAME}``."""

    name: str

    def __post_init__(self) -> None:
        _check_name("queue", self.name)

    @property
    def _base(self) -> str:
        return f"{PREFIX}:{{q:{self.name}}}"

    @property
    def stream(self) -> str:
        return f"{self._base}:stream"

    @property
    def dead(self) -> str:
        return f"{self._base}:dead"

    @property
    def jobs(self) -> str:
        return f"{self._base}:jobs"


@dataclass(frozen=True)
class JobKeys:
    """The keys of one job, all in the slot ``{j:ID}``."""

    id: str

    def __post_init__(self) -> None:
        _check_name("job id", self.id)

    @property
    def _base(self) -> str:
        return f"{PREFIX}:{{j:{self.id}}}"

    @property
    def meta(self) -> str:
        return f"{self._base}:meta"

    @property
    def results(self) -> str:
        return f"{self._base}:results"

    @property
    def events(self) -> str:
        return f"{self._base}:events"

    def all(self) -> tuple[str, str, str]:
        return (self.meta, self.results, self.events)


def node(node_id: str) -> str:
    """The hash that describes one worker node."""
    return f"{PREFIX}:node:{_check_name('node id', node_id)}"


def cost(fn_ref: str) -> str:
    """The per-item cost nodes measured for one function (``module:qualname``)."""
    if not fn_ref or any(c.isspace() for c in fn_ref):
        raise ValueError(f"invalid function reference {fn_ref!r} for a cost key")
    return f"{PREFIX}:cost:{fn_ref}"
