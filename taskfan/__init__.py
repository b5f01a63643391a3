"""taskfan: the contract between producers and worker nodes.

Redis key schema (``keys``), Lua scripts (``scripts``), messages: batch
entries (``protocol``), call modes and task options (``options``), result
entries (``outcomes``), job meta and events (``meta``), function costs
(``cost``), read with the checked field readers of ``fields``; codecs
(``codec``), settings (``settings``), errors (``errors``) and the ``taskfan``
command line (``cli``).
"""

__version__ = "0.1.0"
