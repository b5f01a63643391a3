"""CPython's ``test_concurrent_futures`` (3.10 and 3.13), ported to ``producer.Executor``.

Each test keeps the standard library's name and assertions and runs against a
real worker node. What is intrinsically local (a pool's ``_processes`` or
``_threads``, ``mp_context``, a ``multiprocessing`` Manager's objects, nested
functions and bound methods the node cannot import) is adapted, and every
adaptation says so in a ``# ADAPTED: <why>`` comment. The functions the node
runs live in ``tests/stdlib_futures/calls.py`` so that it can import them.

Not here: the ``initializer`` tests (``test_init.py``) and the
``max_tasks_per_child`` tests belong to item 3 of issue 17 (its port:
``tests/test_stdlib_init.py``); ``map(buffersize=...)`` to item 4
(``tests/test_executor_buffersize.py``). Left out as not
applicable to a remote pool: tests that expect ``BrokenProcessPool`` (a node
isolates a crashing item and fails it alone instead of breaking the pool:
docs/reliability.md), tests that count or kill a pool's processes or threads
(``test_killed_child``, ``test_saturation``, ``test_idle_process_reuse_*``,
``test_thread_names_*``, ``test_threads_terminate``), tests that patch a
pool's internals (``test_gh105829_should_not_deadlock_if_wakeup_pipe_full``),
and ``test_ressources_gced_in_workers`` (a Manager's proxy does not
authenticate on a node).
"""
