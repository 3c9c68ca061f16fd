"""One access log line per request (not for ``/health``), as the reference writes them.

This is on the hot path of every request, so it bypasses the logging module's
formatters: the ECS document is built as a dict and encoded with orjson, and
the lines of one event-loop iteration are written to stderr with one
``os.write`` (whole lines, so they never interleave with other log lines).
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

ECS_VERSION = "1.6.0"


class AccessLog:
    """Writes access lines in ECS JSON (``ecs``) or readable (``dev``) form to a file descriptor."""

    def __init__(self, log_type: str = "ecs", fd: int = 2, extra: dict[str, Any] | None = None) -> None:
        self.log_type = log_type
        self.fd = fd
        self.extra = extra or {}
        self._pending: list[bytes] = []

    def _emit(self, line: bytes) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(line)

    def flush(self) -> None:
        lines, self._pending = self._pending, []
        if lines:
            os.write(self.fd, b"".join(lines))

    def write(
        self, request: web.Request, response: web.StreamResponse, started: float, trace: dict[str, Any]
    ) -> None:
        duration_ns = int((time.monotonic() - started) * 1e9)
        version = f"{request.version.major}.{request.version.minor}"
        message = f"{request.method} {request.path} HTTP/{version}"
        size = response.body_length or response.content_length or 0
        if self.log_type != "ecs":
            line = (
                f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S,%f')[:-3]} INFO    eprd.access: {message}"
                f"  status={response.status} bytes={size} duration_ms={duration_ns / 1e6:.2f}\n"
            )
            self._emit(line.encode())
            return
        host = request.host or ""
        domain, sep, port = host.rpartition(":")
        if not sep or "]" in port:  # no port, or the tail of an IPv6 literal
            domain, port = host, ""
        remote = request.remote or ""
        doc: dict[str, Any] = {
            "@timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "log.level": "info",
            "message": message,
            "ecs.version": ECS_VERSION,
            "log": {"logger": "eprd.access"},
            "http": {
                "version": version,
                "request": {"method": request.method},
                "response": {"status_code": response.status, "body": {"bytes": size}},
            },
            "url": {"path": request.path, "query": request.query_string, "domain": domain, "port": port},
            "source": {"address": remote, "ip": remote},
            "user_agent": {"original": request.headers.get("User-Agent", "")},
            "event": {"duration": duration_ns},
            **self.extra,
            **trace,
        }
        referer = request.headers.get("Referer")
        if referer:
            doc["http"]["request"]["referrer"] = referer
        self._emit(orjson.dumps(doc) + b"\n")
