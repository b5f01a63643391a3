"""taskfan: the contract between producers and worker nodes.

Redis key schema (``keys``), Lua scripts (``scripts``), message formats
(``protocol``), codecs (``codec``), settings (``settings``), errors (``errors``)
and the ``taskfan`` command line (``cli``).
"""

__version__ = "0.1.0"
