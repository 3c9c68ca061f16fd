"""Logging: ECS JSON lines (``-log-type ecs``, the default) or readable lines (``dev``)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
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
# Of the attributes the APM agent's log correlation adds to records, the ones dev lines show.
_APM_IDS = ("elasticapm_trace_id", "elasticapm_transaction_id")


def service_fields(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The ``service.*`` fields of every ECS line: APM's service name (``package-registry`` by
    default, as ``/`` reports it), eprd's version, and ``ELASTIC_APM_ENVIRONMENT`` when set."""
    from eprd import __version__

    fields = {
        "service.name": environ.get("ELASTIC_APM_SERVICE_NAME") or "package-registry",
        "service.version": __version__,
    }
    if environ.get("ELASTIC_APM_ENVIRONMENT"):
        fields["service.environment"] = environ["ELASTIC_APM_ENVIRONMENT"]
    return fields


class EcsFormatter(ecs_logging.StdlibFormatter):
    """ecs-logging's formatter with ``fields`` as defaults of every line.

    A line's own ``extra=`` values win over the defaults (ecs-logging's global ``extra``
    refuses to merge the same key twice). With APM on, the agent's log record factory adds
    its copy of the service name and environment to every record, dropped here in favour
    of :func:`service_fields` (its trace and transaction ids stay).
    """

    def __init__(self, fields: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._defaults = dict(fields or {})

    def format_to_ecs(self, record: logging.LogRecord) -> dict[str, Any]:
        attributes = vars(record)
        attributes.pop("elasticapm_service_name", None)
        attributes.pop("elasticapm_service_environment", None)
        for name, value in self._defaults.items():
            attributes.setdefault(name, value)
        return super().format_to_ecs(record)


class DevFormatter(logging.Formatter):
    """``time LEVEL logger message key=value ...`` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v!r}"
            for k, v in vars(record).items()
            if k not in _STANDARD and (not k.startswith("elasticapm_") or (k in _APM_IDS and v))
        )
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
        handler.setFormatter(EcsFormatter(extra_fields))
    else:
        handler.setFormatter(DevFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # aiohttp's own access logger is replaced by eprd's (see routes.access_log).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # watchfiles logs every batch at INFO; eprd logs one line per snapshot swap instead.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
