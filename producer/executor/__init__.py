"""The Executor: ``concurrent.futures.Executor`` over a taskfan cluster.

``executor`` (the class: submit, map, shutdown), ``collector`` (settles submit's
futures from the shared job's events), ``futures`` (the futures and interpreter
exit), ``pool_compat`` (what it mirrors of the stdlib's pools), ``buffered``
(``map(..., buffersize=)``: the input read lazily).
"""

from producer.executor.executor import Executor

__all__ = ["Executor"]
