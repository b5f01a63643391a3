"""taskfan's benchmark suite (issue 5): taskfan beside the local pool, RQ and
(``--peers``, issue 18) Celery, Dask and Ray.

``python -m benchmarks`` runs everything, prints markdown tables and writes
``benchmarks/results/latest.json``; ``python -m benchmarks.plot`` draws
throughput against chunksize from that JSON. See docs/performance.md.

Modules, in the order a run uses them:

- ``config``: the scenarios, their settings, full and ``--quick`` sizes, options
- ``suite``: one run: a private redis-server, a warm node, every chosen scenario
- ``throughput``: scenarios (a), (b), (c), side by side, medians of repeats
- ``runners``: one timed map on the local pool or on taskfan; ``rq_side``: on RQ
- ``peers``: Celery, Dask and Ray, each a warm cluster in a driver subprocess
- ``producer_side``: ``submit`` latency and the enqueue rate
- ``memory``: a node's peak RSS after 100,000 and 1,000,000 items
- ``processes``: the node subprocess, and /proc memory readings
- ``report``: markdown tables and the goals; ``measure``: runs and statistics
- ``tasks``: the seed's task, importable by pool processes, nodes and RQ workers
"""
