"""The Executor: ``concurrent.futures.Executor`` over a taskfan cluster.

``executor`` (the class: submit, map, shutdown), ``coalesce`` (how submitted
calls are cut into shared batches), ``submitter`` (the thread that sends them;
the seal; taking calls back), ``collector`` (settles submit's futures from the
shared job's events), ``futures`` (the futures and interpreter
exit), ``pool_compat`` (what it mirrors of the stdlib's pools), ``buffered``
(``map(..., buffersize=)``: the input read lazily).
"""

from producer.executor.executor import Executor

__all__ = ["Executor"]
