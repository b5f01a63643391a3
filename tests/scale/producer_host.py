"""A producer on a host of its own: ``python -m tests.scale.producer_host URL ITEMS BATCH``.

Enqueues ``tests.tasks:nap_square`` over ``range(ITEMS)``, prints the job id on a
line of its own at once, then reads every result in input order and prints one
JSON line: how many came back and whether each was right.
"""

from __future__ import annotations

import json
import sys

from producer import Client
from tests import tasks


def main(url: str, items: int, batch_size: int) -> None:
    job = Client.from_url(url).map(tasks.nap_square, range(items), batch_size=batch_size)
    print(job.id, flush=True)
    results = list(job.results(timeout=300))
    right = sum(1 for i, value in enumerate(results) if value == i * i)
    print(json.dumps({"results": len(results), "right": right}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
