"""Structured logging: plain text for people, JSON lines (SCANSTREAM_LOG_FORMAT=json) for machines.

Pass context with `extra={"scan_id": ..., "strategy": ..., "attempt": ...}`; both formats show it.
Both mask passwords and tokens (`scanstream.redact`): a Redis error that quotes its URL,
or a message that quotes a request, does not put a secret in the logs.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

from scanstream.redact import redact

CONTEXT_FIELDS = ("scan_id", "strategy", "attempt", "job_id", "worker")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            if hasattr(record, name):
                body[name] = getattr(record, name)
        if record.exc_info:
            body["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(body).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = redact(super().format(record))
        context = " ".join(
            f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if hasattr(record, name)
        )
        return f"{line} [{context}]" if context else line


def configure(log_format: str = "text", level: int | str = logging.INFO) -> None:
    """Log to stderr in `log_format`; `level` a logging level or its name ("info")."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.Formatter.converter = __import__("time").gmtime
