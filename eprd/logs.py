"""Logging: ECS JSON lines (``-log-type ecs``, the default) or readable lines (``dev``)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import ecs_logging

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "dpanic": logging.CRITICAL,
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
LOG_TYPES = ("ecs", "dev")

# Attributes every LogRecord has; anything else was passed through ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class DevFormatter(logging.Formatter):
    """``time LEVEL logger message key=value ...`` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v!r}" for k, v in vars(record).items() if k not in _STANDARD)
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += "  " + extras
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(level: str, log_type: str, extra_fields: dict[str, Any] | None = None) -> None:
    """Send every eprd log line to stderr in the chosen format."""
    if level not in LEVELS:
        raise ValueError(f"unknown log level: {level}")
    if log_type not in LOG_TYPES:
        raise ValueError(f"invalid log type: {log_type}")
    handler = logging.StreamHandler(sys.stderr)
    if log_type == "ecs":
        handler.setFormatter(ecs_logging.StdlibFormatter(extra=extra_fields or {}))
    else:
        handler.setFormatter(DevFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # aiohttp's own access logger is replaced by eprd's (see routes.access_log).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # watchfiles logs every batch at INFO; eprd logs one line per snapshot swap instead.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
