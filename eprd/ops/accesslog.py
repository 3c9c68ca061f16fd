"""One access log line per request (not for ``/health``), as the reference writes them.

This is on the hot path of every request, so it bypasses the logging module's
formatters: the ECS document is built as a dict and encoded with orjson, and
the lines of one event-loop iteration are written to stderr with one
``os.write`` (whole lines, so they never interleave with other log lines).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
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
        """``extra``: fields of every ECS line, dotted names allowed (``{"service.name": ...}``)."""
        self.log_type = log_type
        self.fd = fd
        self.extra = _nested(extra or {})
        self._pending: list[bytes] = []
        self._constant: tuple[bytes, bytes, bytes] | None = None  # see _ecs_line

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
        size = response.content_length or 0  # (body_length counts header bytes, not sendfile's)
        if self.log_type != "ecs":
            line = (
                f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S,%f')[:-3]} INFO    eprd.access: {message}"
                f"  status={response.status} bytes={size} duration_ms={duration_ns / 1e6:.2f}"
            )
            if trace:
                line += f" trace.id={trace['trace']['id']} transaction.id={trace['transaction']['id']}"
            line += "\n"
            self._emit(line.encode())
            return
        if not trace:
            line = self._ecs_line(request, response, duration_ns, message, version, size)
            if line is not None:
                self._emit(line)
                return
        host = request.host or ""
        domain, sep, port = host.rpartition(":")
        if not sep or "]" in port:  # no port, or the tail of an IPv6 literal
            domain, port = host, ""
        remote = request.remote or ""
        # The reference's fields (internal/util/logging.go), plus ECS's http.response.status_code
        # and http.version; optional ones only when they have a value, as the reference.
        http_request: dict[str, Any] = {"method": request.method}
        url: dict[str, Any] = {"path": request.path, "domain": domain}
        doc: dict[str, Any] = {
            "@timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "log.level": "info",
            "message": message,
            "ecs.version": ECS_VERSION,
            "log": {"logger": "eprd.access"},
            "http": {
                "version": version,
                "request": http_request,
                "response": {
                    "code": response.status,
                    "status_code": response.status,
                    "body": {"bytes": size},
                },
            },
            "url": url,
            "source": {"address": remote, "ip" if _is_ip(remote) else "domain": remote},
            "event": {"duration": duration_ns},
            **self.extra,
            **trace,
        }
        if port.isdigit() and int(port):
            url["port"] = int(port)
        query = request.raw_path.partition("?")[2]  # raw, as the reference's url.query
        if query:
            url["query"] = query
        headers = request.headers
        referer = headers.get("Referer")
        if referer:
            http_request["referer"] = referer
        agent = headers.get("User-Agent")
        if agent:
            doc["user_agent"] = {"original": agent}
        self._emit(orjson.dumps(doc) + b"\n")

    # --- the pre-formatted ECS line: the common case (no APM trace) without a dict per request ---

    def _ecs_line(
        self,
        request: web.Request,
        response: web.StreamResponse,
        duration_ns: int,
        message: str,
        version: str,
        size: int,
    ) -> bytes | None:
        """The ECS line ``write`` would build, from pre-encoded parts; None to let it build it.

        The same fields in the same order as the dict in ``write``; constant parts are encoded
        once, strings one by one with orjson (so escaping is orjson's). Anything orjson refuses
        (a string that is not valid Unicode) returns None: ``write``'s own path handles it.
        """
        if self._constant is None:
            self._constant = _constant_parts(self.extra)
        head, middle, tail = self._constant
        host = request.host or ""
        domain, sep, port = host.rpartition(":")
        if not sep or "]" in port:
            domain, port = host, ""
        remote = request.remote or ""
        query = request.raw_path.partition("?")[2]
        headers = request.headers
        referer = headers.get("Referer")
        agent = headers.get("User-Agent")
        dumps = orjson.dumps
        try:
            parts = [
                b'{"@timestamp":"', _timestamp(), b'","log.level":"info","message":', dumps(message),
                head, dumps(version), b',"request":{"method":', dumps(request.method),
                (b',"referer":' + dumps(referer)) if referer else b"",
                b'},"response":{"code":%d,"status_code":%d,"body":{"bytes":%d}}},"url":{"path":'
                % (response.status, response.status, size),
                dumps(request.path), b',"domain":', dumps(domain),
                (b',"port":%d' % int(port)) if port.isdigit() and int(port) else b"",
                (b',"query":' + dumps(query)) if query else b"",
                b'},"source":{"address":', dumps(remote), b',"ip":' if _is_ip(remote) else b',"domain":',
                dumps(remote), b'},"event":{"duration":%d}' % duration_ns, middle,
                (b',"user_agent":{"original":' + dumps(agent) + b"}") if agent else b"",
                tail,
            ]  # fmt: skip
        except (orjson.JSONEncodeError, TypeError):
            return None
        return b"".join(parts)


def _constant_parts(extra: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
    """The bytes around the per-request fields of an ECS access line."""
    head = b',"ecs.version":"' + ECS_VERSION.encode() + b'","log":{"logger":"eprd.access"},"http":{"version":'
    fields = orjson.dumps(extra)[1:-1]  # the service fields, as ``**self.extra`` puts them
    middle = b"," + fields if fields else b""
    return head, middle, b"}\n"


_last_ms = -1
_last_stamp = b""


def _timestamp() -> bytes:
    """Now as ECS wants it (``2026-01-02T03:04:05.678Z``), formatted once per millisecond."""
    global _last_ms, _last_stamp
    now_ms = time.time_ns() // 1_000_000
    if now_ms != _last_ms:
        seconds, ms = divmod(now_ms, 1000)
        _last_stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode() + b".%03dZ" % ms
        _last_ms = now_ms
    return _last_stamp


def _nested(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in fields.items():
        *parents, leaf = name.split(".")
        target = out
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return out


@functools.lru_cache(maxsize=4096)
def _is_ip(address: str) -> bool:
    """Whether a peer address is an IP (source.ip) rather than a name (source.domain)."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True
