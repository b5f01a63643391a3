"""The operators' side: the ``taskfan`` commands of producers and operators and
what they read and do (a library user imports none of it).

Commands: ``cli`` (enqueue, wait, results, and the shared ``load_settings``,
``open_client``, ``attach``), ``cli_options``, ``cli_admin`` (cancel, retry,
purge), ``cli_ops`` (nodes, jobs, inspect), ``cli_dead`` (dead), ``status``,
``run``, ``dashboard`` (+ ``dashboard.html``); their files: ``inputs``,
``input_lines``, ``outputs``, ``local_check``. Views and actions: ``overview``
(queues, jobs; nodes in ``nodelist``), ``peek`` (failures read without
unpickling), ``skipped`` (records a view cannot read), ``deadletters``,
``admin`` (purge).
"""
