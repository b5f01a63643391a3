"""Imported first by a worker node's forkserver (and only there): takes the
current folder off its ``sys.path`` (``taskfan.syspath``), so that the next
preload, ``worker.pool.forkserver_preload``, and every pool process forked from
the forkserver import our ``worker`` package, not a user's ``worker.py``."""

from taskfan.syspath import drop_current_folder

drop_current_folder()
