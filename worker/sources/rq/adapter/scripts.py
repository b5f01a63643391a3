"""The adapter's Lua scripts (``lua/``), loaded once, and how they are called.

Each script does one step of RQ's worker for many jobs per call; its typed
caller is in ``intermediate`` (dequeue.lua, release.lua) or ``record`` (start.lua,
refresh.lua, finish.lua). Scripts that build per-job keys get ``lua/_keys.lua``
in front, and ``PRELUDE`` as their first arguments: ``keys.JOB_AFFIXES`` and the
RQ major (``versions.RQ_MAJOR``) for what differs between RQ 2 and 3.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

from worker.sources.rq.adapter.keys import JOB_AFFIXES
from worker.sources.rq.adapter.versions import RQ_MAJOR

#: the most jobs one script call handles: a call blocks every other Redis client
#: while it runs (about 20 ms for 250 jobs)
SCRIPT_JOBS = 250

#: the arguments _keys.lua takes first (ARGV[1..13]); a script's own start at its A
PRELUDE: list[Any] = [*JOB_AFFIXES, RQ_MAJOR]


def _script(name: str, prelude: bool = True) -> Script:
    folder = resources.files(__package__) / "lua"
    text = (folder / f"{name}.lua").read_bytes()
    if prelude:
        text = (folder / "_keys.lua").read_bytes() + text
    return Script(None, text)  # type: ignore[arg-type]


DEQUEUE = _script("dequeue")
RELEASE = _script("release", prelude=False)
START, FINISH, REFRESH = map(_script, ("start", "finish", "refresh"))


def run(client: redis.Redis, script: Script, keys: list[str], args: list[Any]) -> Any:
    return script(keys=keys, args=args, client=client)
