"""Our own packages, not a user's look-alikes of them, in processes we start.

A user's folder may hold its own ``worker.py``, ``producer.py`` or ``worker/``.
``python -m taskfan`` (how ``taskfan run`` starts its worker) and a node's
forkserver (``python -c``) begin with the current folder first on ``sys.path``,
so such a module would be imported in place of our ``worker`` or ``producer``
package (an editable install's finder comes after every ``sys.path`` entry, so
moving the folder back is not enough). These processes take the current folder
off ``sys.path``, as the ``taskfan`` script never had it: task modules are
imported from the folders of ``--path`` (``.`` by default), which the CLI's
checks and the pool's processes put on the path themselves
(``producer.ops.local_check``, ``worker.pool.child.init_child``).

A checkout run in place (the current folder holds ``taskfan/`` itself) keeps
its path: there the current folder is where our packages come from.
"""

from __future__ import annotations

import os
import sys

#: the folder our packages (taskfan, producer, worker) come from
OURS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def without_current_folder(path: list[str], cwd: str, ours: str = OURS) -> list[str]:
    """``path`` without the entries naming ``cwd`` (``""`` and ``"."`` included),
    unless ``cwd`` is ``ours``."""
    here = os.path.realpath(cwd)
    if here == os.path.realpath(ours):
        return list(path)
    return [entry for entry in path if os.path.realpath(os.path.join(cwd, entry)) != here]


def drop_current_folder() -> None:
    """Take the current folder off this process's ``sys.path``."""
    sys.path[:] = without_current_folder(sys.path, os.getcwd())
