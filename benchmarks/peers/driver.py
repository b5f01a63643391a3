"""``python -m benchmarks.peers.driver NAME REDIS_URL``: one peer's cluster, timed on command.

Runs in a subprocess of the suite (``cluster.PeerCluster``), so that the peer's
client threads never share a GIL with taskfan's producer. It starts the
cluster, runs a warm-up round, then answers one JSON line per command read on
stdin: ``{"variant", "count", "num_calc", "chunksize"}`` -> ``{"seconds",
"digest"}``, timed from the first submit to the last result. The inputs are
``runners.make_items``, the same as every other runner's. The cluster is closed
on ``{"quit": true}``, end of input, SIGTERM or any error.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any, Protocol

from benchmarks.peers import digest
from benchmarks.processes import WARM_UP
from benchmarks.runners import make_items


class Peer(Protocol):
    def warm(self, items: list[Any]) -> None: ...
    def run(self, variant: str, items: list[Any], chunksize: int) -> list[Any]: ...
    def close(self) -> None: ...


def start(name: str, redis_url: str) -> tuple[Peer, dict[str, str]]:
    if name == "celery":
        from benchmarks.peers import celery_peer

        return celery_peer.CeleryPeer(redis_url), celery_peer.VARIANTS
    if name == "dask":
        from benchmarks.peers import dask_peer

        return dask_peer.DaskPeer(redis_url), dask_peer.VARIANTS
    if name == "ray":
        from benchmarks.peers import ray_peer

        return ray_peer.RayPeer(redis_url), ray_peer.VARIANTS
    raise ValueError(f"unknown peer {name!r}")


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str]) -> int:
    name, redis_url = argv
    # replies go to the original stdout; anything the peer prints goes to stderr
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGTERM, _stop)

    def send(message: dict[str, Any]) -> None:
        reply.write(json.dumps(message) + "\n")

    peer: Peer | None = None
    try:
        peer, variants = start(name, redis_url)
        peer.warm(list(WARM_UP))
        send({"ready": True, "variants": variants})
        for line in sys.stdin:
            command = json.loads(line)
            if command.get("quit"):
                break
            items = make_items(command["count"], command["num_calc"])
            started = time.perf_counter()
            results = peer.run(command["variant"], items, command["chunksize"])
            seconds = time.perf_counter() - started
            send({"seconds": seconds, "digest": digest(results)})
    except Exception:
        send({"error": traceback.format_exc(limit=5)})
        return 1
    finally:
        if peer is not None:
            peer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
