"""A task module that leaves a mark when it is imported, so tests can tell that a
node never imported it. The mark is the file named by TASKFAN_TEST_IMPORT_MARKER."""

from __future__ import annotations

import os
from pathlib import Path

_MARKER = os.environ.get("TASKFAN_TEST_IMPORT_MARKER")
if _MARKER:
    Path(_MARKER).write_text(f"imported by {os.getpid()}")


def echo(x: object) -> object:
    return x
