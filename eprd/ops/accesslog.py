"""One access log line per request (not for ``/health``), as the reference writes them.

This is on the hot path of every request, so it bypasses the logging module's
formatters: the ECS document is built as a dict and encoded with orjson, and
the lines of one event-loop iteration are written to stderr with one
``os.write`` (whole lines, so they never interleave with other log lines).

Every field a client chooses (path, query, Host, Referer, User-Agent) may hold
bytes that are not UTF-8 (aiohttp hands them over as surrogate escapes, which
orjson refuses): such a line is encoded a second time with the invalid
sequences replaced by U+FFFD, as the reference's zap encoder writes them. The
common line pays nothing for this: the retry only runs when orjson fails.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

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
        self, request: web.BaseRequest, response: web.StreamResponse, started: float, trace: dict[str, Any]
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
            # A decoded path may hold line breaks (%0A): escaped, so one request is one line.
            line = _CONTROL.sub(_escape_control, line) + "\n"
            try:
                self._emit(line.encode())
            except UnicodeEncodeError:
                self._emit(safe_text(line).encode())
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
        port_number = _go_atoi(port) if port else None
        if port_number:
            url["port"] = port_number
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
        try:
            encoded = orjson.dumps(doc)
        except TypeError:  # str with surrogates: client bytes that are not UTF-8
            encoded = orjson.dumps(_safe_doc(doc))
        self._emit(encoded + b"\n")

    # --- the pre-formatted ECS line: the common case (no APM trace) without a dict per request ---

    def _ecs_line(
        self,
        request: web.BaseRequest,
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
                dumps(request.path), _host_part(request.host or ""),
                (b',"query":' + dumps(query)) if query else b"",
                _source_part(request.remote or ""), b',"event":{"duration":%d}' % duration_ns, middle,
                (b',"user_agent":{"original":' + dumps(agent) + b"}") if agent else b"",
                tail,
            ]  # fmt: skip
        except (orjson.JSONEncodeError, TypeError):
            return None
        return b"".join(parts)


# Memoised: a registry sees few distinct Host headers and client addresses (a bounded cache, so
# many distinct ones only cost their encoding). orjson's error for a string that is not valid
# Unicode passes through to _ecs_line, which then lets ``write`` build the line.


@functools.lru_cache(maxsize=1024)
def _host_part(host: str) -> bytes:
    """The ``"domain"`` (and ``"port"``) members of ``url`` for a Host header, as ``write`` puts them."""
    domain, sep, port = host.rpartition(":")
    if not sep or "]" in port:  # no port, or the tail of an IPv6 literal
        domain, port = host, ""
    port_number = _go_atoi(port) if port else None
    return b',"domain":' + orjson.dumps(domain) + ((b',"port":%d' % port_number) if port_number else b"")


@functools.lru_cache(maxsize=1024)
def _source_part(remote: str) -> bytes:
    """The ``source`` member for a client address, closing ``url`` before it."""
    encoded = orjson.dumps(remote)
    kind = b',"ip":' if _is_ip(remote) else b',"domain":'
    return b'},"source":{"address":' + encoded + kind + encoded + b"}"


def safe_text(text: str) -> str:
    """``text`` with every byte sequence that is not UTF-8 replaced by U+FFFD."""
    try:
        # Surrogate escapes stand for the client's bytes: back to them, then decoded leniently.
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # other lone surrogates
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _safe_doc(value: Any) -> Any:
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(key): _safe_doc(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_safe_doc(item) for item in value]
    return value


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _escape_control(found: re.Match[str]) -> str:
    return f"\\x{ord(found.group()):02x}"


_GO_INT = re.compile(r"[+-]?[0-9]+")


def _go_atoi(text: str) -> int | None:
    """strconv.Atoi on a 64-bit platform: ASCII digits with an optional sign, int64 range, else None."""
    if not _GO_INT.fullmatch(text):
        return None  # int() would take "²", "٣", "1_0" and " 1"
    digits = text.lstrip("+-").lstrip("0") or "0"
    if len(digits) > 19:
        return None
    value = -int(digits) if text[0] == "-" else int(digits)
    return value if -(1 << 63) <= value < (1 << 63) else None


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


class ClientErrorFilter(logging.Filter):
    """Turns aiohttp's "Error handling request" for a malformed request into a debug line.

    A request line or header that is not HTTP (bytes that are not ASCII in the target,
    a line over 8 KiB, a bad chunk size) is the client's error: aiohttp answers it 400
    and closes the connection, as Go's server does without a word, but logs it with a
    traceback at ERROR, which would let any client fill the error log. Errors of the
    server itself (a handler raising) still pass through untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not _is_client_error(exc):
            return True
        if _client_log.isEnabledFor(logging.DEBUG):
            reason = safe_text(str(getattr(exc, "message", exc))).strip().splitlines()
            _client_log.debug(
                "malformed request refused",
                extra={"error.type": type(exc).__name__, "error.message": reason[0] if reason else ""},
            )
        return False


_client_log = logging.getLogger("eprd.access")


def _is_client_error(exc: BaseException) -> bool:
    return isinstance(exc, BadHttpMessage)


_FILTER = ClientErrorFilter()


def quiet_client_errors(logger_name: str = "aiohttp.server") -> None:
    """Install :class:`ClientErrorFilter` on aiohttp's server logger (once; calling again is a no-op)."""
    logger = logging.getLogger(logger_name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
