"""The seed article's submit sample, on a taskfan cluster.

Run from the repository root, with worker nodes on the same Redis
(``taskfan worker`` or ``docker compose up``)::

    TASKFAN_REDIS_URL=redis://localhost:6379/0 python examples/submit.py

The only change from the ``concurrent.futures`` version is the line that makes
the executor: ``ProcessPoolExecutor(max_workers=1)`` became ``Executor(...)``.
"""

from __future__ import annotations

import os

from producer import Executor

REDIS_URL = os.environ.get("TASKFAN_REDIS_URL", "redis://localhost:6379/0")


def main() -> None:
    with Executor(REDIS_URL, max_workers=1) as executor:
        future = executor.submit(pow, 323, 1235)
        print(future.result())


if __name__ == "__main__":
    main()
