"""Structured logs: one JSON object per line, with the fields a log call passes as `extra`.

    {"time": "2026-11-22T00:31:02.114+00:00", "level": "info", "logger": "flowkeeper.workflow",
     "message": "anomaly", "kind": "late_event", "instance_id": "ord-1", "trace_id": "4bf9..."}

Only the `flowkeeper` logger tree is configured (not the root), so embedding applications and
pytest keep their own handlers.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """A log record as one line of JSON; `extra` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **{k: v for k, v in vars(record).items() if k not in _STANDARD},
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, stream: TextIO | None = None) -> logging.Logger:
    """Send `flowkeeper.*` records at `level` and above to `stream` (stderr) as JSON lines;
    calling it again replaces the handler instead of adding a second one."""
    logger = logging.getLogger("flowkeeper")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.handlers = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    return logger
