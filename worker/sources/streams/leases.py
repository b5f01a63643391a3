"""The leases of the batches a node holds: renewing them, and handing batches
back so that other nodes reclaim them at once (XCLAIM ... JUSTID), to the
consumer ``HANDED_BACK``: no node holds them then, so a future's ``cancel()``
can still take back a call handed back unrun (lua/cancel_call.lua)."""

from __future__ import annotations

from typing import Any

from taskfan.keys import GROUP, HANDED_BACK, QueueKeys
from worker.sources.streams.redis_groups import NodeRedisBase, lost_group


class Leases(NodeRedisBase):
    def refresh(self, entries: dict[QueueKeys, list[Any]]) -> None:
        """Renew the leases of the batches this node holds (resets their idle time)."""
        self._claim(entries, None)

    def hand_back(
        self, entries: dict[QueueKeys, list[Any]], idle_ms: int, deliveries: int | None = None
    ) -> None:
        """Make batches this node will not finish reclaimable by others at once:
        claimed by ``HANDED_BACK``, not by this node. ``deliveries``: set their
        delivery count to it (RETRYCOUNT), so that a batch this node never ran
        uses up no delivery."""
        self._claim(entries, idle_ms, deliveries, consumer=HANDED_BACK)

    def _claim(
        self,
        entries: dict[QueueKeys, list[Any]],
        idle_ms: int | None,
        deliveries: int | None = None,
        consumer: str | None = None,
    ) -> None:
        """XCLAIM ... JUSTID the entries to ``consumer`` (this node, unless given)
        with idle time ``idle_ms`` (None: zero). A queue whose group was lost
        holds none of them any more."""
        pipe = self.client.pipeline(transaction=False)
        for queue, ids in entries.items():
            if ids:
                pipe.xclaim(
                    queue.stream, GROUP, consumer or self.node_id, 0, ids,
                    idle=idle_ms, retrycount=deliveries, justid=True,
                )  # fmt: skip
        errors = [r for r in pipe.execute(raise_on_error=False) if isinstance(r, Exception)]
        lost = [e for e in errors if lost_group(e)]
        others = [e for e in errors if not lost_group(e)]
        if lost:
            self._regroup(lost[0])
        if others:
            raise others[0]
