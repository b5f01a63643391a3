"""Log formats for operators: ``text`` (one readable line) and ``json`` (one object a line).

Log calls about a batch pass ``extra={"job": ..., "batch": ...}`` (``batch_extra``)
besides naming both in the message, so that a JSON line can be filtered by job
and batch without parsing text. The CLI chooses the format
(``taskfan.cli.configure_logging``); libraries never configure logging.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
#: structured fields a log call may pass in ``extra``; JSON lines carry them as keys
FIELDS = ("job", "batch", "node", "queue", "items", "failed", "seconds", "entry")


def batch_extra(job_id: str, batch: object, **more: Any) -> dict[str, Any]:
    """The ``extra`` of a log call about one batch of a job."""
    return {"job": job_id, "batch": str(batch), **more}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, message, the
    structured fields the call passed, and ``exc`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                data[name] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return logging.Formatter(TEXT_FORMAT, "%H:%M:%S")
    raise ValueError(f"unknown log format {fmt!r}: choose one of {', '.join(FORMATS)}")


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"
