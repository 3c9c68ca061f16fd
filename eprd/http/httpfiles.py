"""Serving package files with HTTP file semantics.

Files on disk are sent with the kernel's sendfile (:class:`DiskFileResponse`),
files inside zip archives from memory (:func:`bytes_response`); both follow
Go's ``http.ServeContent``: validators, If-* preconditions, single and
multiple ranges, and the headers each status keeps or drops.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict


def http_date(timestamp: float) -> str:
    return email.utils.formatdate(int(timestamp), usegmt=True)


def _parse_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError):
        return None


def _etag_matches(header: str, etag: str | None, weak: bool) -> bool:
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if etag is None:
            continue
        if weak:
            if candidate.removeprefix("W/") == etag.removeprefix("W/"):
                return True
        elif candidate == etag and not etag.startswith("W/"):
            return True
    return False


def _precondition(request: web.Request, mtime: int | None, etag: str | None) -> int | None:
    """Status for a failed precondition (412) or an unchanged resource (304), else None."""
    if_match = request.headers.get(hdrs.IF_MATCH)
    if if_match is not None:
        if not _etag_matches(if_match, etag, weak=False):
            return 412
    else:
        since = _parse_date(request.headers.get(hdrs.IF_UNMODIFIED_SINCE))
        if since is not None and mtime and mtime > since:
            return 412
    if_none_match = request.headers.get(hdrs.IF_NONE_MATCH)
    if if_none_match is not None:
        if _etag_matches(if_none_match, etag, weak=True):
            return 304 if request.method in ("GET", "HEAD") else 412
        return None
    if request.method in ("GET", "HEAD"):
        since = _parse_date(request.headers.get(hdrs.IF_MODIFIED_SINCE))
        if since is not None and mtime and mtime <= since:
            return 304
    return None


def _ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """Byte ranges as (start, length); None when unsatisfiable or malformed."""
    if not header.startswith("bytes="):
        return None
    out = []
    for spec in header[len("bytes=") :].split(","):
        spec = spec.strip()
        if not spec:
            continue
        start_text, sep, end_text = spec.partition("-")
        if not sep:
            return None
        start_text, end_text = start_text.strip(), end_text.strip()
        if not start_text:
            if not end_text.isdigit():
                return None
            suffix = min(int(end_text), size)
            if suffix == 0:
                continue
            out.append((size - suffix, suffix))
            continue
        if not start_text.isdigit() or (end_text and not end_text.isdigit()):
            return None
        start = int(start_text)
        if start >= size:
            continue
        end = min(int(end_text), size - 1) if end_text else size - 1
        if end < start:
            return None
        out.append((start, end - start + 1))
    return out or None


@dataclass(slots=True)
class _Plan:
    """What to answer for a file: status, headers, and which byte ranges of it to send."""

    status: int
    headers: CIMultiDict[str]
    ranges: list[tuple[int, int]]  # (start, length); several make a multipart/byteranges body
    error: bytes = b""
    boundary: str = ""


def _plan(
    request: web.Request,
    size: int,
    mtime: float,
    etag: str | None,
    headers: Mapping[str, str] | CIMultiDict[str],
    content_type_value: str,
) -> _Plan:
    """Go's ServeContent decisions: validators, preconditions, ranges."""
    out = CIMultiDict(headers)
    seconds = int(mtime) if mtime > 0 else None  # Go compares modification times in whole seconds
    if seconds:
        out[hdrs.LAST_MODIFIED] = http_date(seconds)
    if etag:
        out[hdrs.ETAG] = etag
    status = _precondition(request, seconds, etag)
    if status is not None:
        return _Plan(status, out, [])
    out[hdrs.ACCEPT_RANGES] = "bytes"
    range_header = request.headers.get(hdrs.RANGE)
    if_range = request.headers.get(hdrs.IF_RANGE)
    if range_header and if_range and not _if_range_matches(if_range, seconds, etag):
        range_header = None
    if range_header and size > 0:
        ranges = _ranges(range_header, size)
        if ranges is None:
            for name in (hdrs.CACHE_CONTROL, hdrs.LAST_MODIFIED, hdrs.ETAG):
                out.popall(name, None)
            out[hdrs.CONTENT_RANGE] = f"bytes */{size}"
            out[hdrs.CONTENT_TYPE] = "text/plain; charset=utf-8"
            out["X-Content-Type-Options"] = "nosniff"
            return _Plan(416, out, [], error=b"invalid range: failed to overlap\n")
        if sum(length for _, length in ranges) <= size:
            if len(ranges) == 1:
                start, length = ranges[0]
                out[hdrs.CONTENT_RANGE] = f"bytes {start}-{start + length - 1}/{size}"
                out[hdrs.CONTENT_TYPE] = content_type_value
                return _Plan(206, out, ranges)
            boundary = uuid.uuid4().hex
            out[hdrs.CONTENT_TYPE] = f"multipart/byteranges; boundary={boundary}"
            return _Plan(206, out, ranges, boundary=boundary)
    out[hdrs.CONTENT_TYPE] = content_type_value
    return _Plan(200, out, [(0, size)])


def _multipart(plan: _Plan, size: int, ctype: str, read: Callable[[int, int], bytes]) -> bytes:
    parts = [
        f"--{plan.boundary}\r\nContent-Range: bytes {start}-{start + length - 1}/{size}\r\n"
        f"Content-Type: {ctype}\r\n\r\n".encode()
        + read(start, length)
        + b"\r\n"
        for start, length in plan.ranges
    ]
    return b"".join(parts) + f"--{plan.boundary}--\r\n".encode()


def bytes_response(
    request: web.Request,
    body: bytes,
    *,
    headers: Mapping[str, str] | CIMultiDict[str],
    content_type_value: str,
    mtime: float = 0.0,
    etag: str | None = None,
) -> web.Response:
    """An in-memory file (e.g. inside a zip) with the semantics of Go's ServeContent."""
    plan = _plan(request, len(body), mtime, etag, headers, content_type_value)
    if plan.status in (304, 412):
        return web.Response(status=plan.status, headers=plan.headers)
    if plan.error:
        return web.Response(status=plan.status, body=plan.error, headers=plan.headers)
    if plan.boundary:
        data = _multipart(plan, len(body), content_type_value, lambda start, n: body[start : start + n])
        return web.Response(status=206, body=data, headers=plan.headers)
    start, length = plan.ranges[0]
    return web.Response(status=plan.status, body=body[start : start + length], headers=plan.headers)


class DiskFileResponse(web.StreamResponse):
    """A file on disk sent with sendfile, with the semantics of Go's ServeContent."""

    def __init__(
        self, path: str, headers: Mapping[str, str] | CIMultiDict[str], content_type_value: str
    ) -> None:
        super().__init__()
        self._path = path
        self._extra = CIMultiDict(headers)
        self._ctype = content_type_value

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await super().prepare(request)
        loop = asyncio.get_running_loop()
        fobj = await loop.run_in_executor(None, open, self._path, "rb")
        try:
            st = os.fstat(fobj.fileno())
            self._extra.update(self.headers)  # headers the handler chain added (e.g. CORS)
            etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
            plan = _plan(request, st.st_size, st.st_mtime, etag, self._extra, self._ctype)  # type: ignore[arg-type]
            self.set_status(plan.status)
            self.headers.clear()
            self.headers.extend(plan.headers)
            if plan.status in (304, 412) or plan.error or plan.boundary:
                if plan.boundary:
                    body = _multipart(
                        plan, st.st_size, self._ctype, lambda start, n: os.pread(fobj.fileno(), n, start)
                    )
                else:
                    body = plan.error
                self.content_length = len(body)
                writer = await super().prepare(request)
                if body and request.method != "HEAD":
                    await self.write(body)
                await self.write_eof()
                return writer
            offset, count = plan.ranges[0]
            self.content_length = count
            writer = await super().prepare(request)
            if request.method != "HEAD" and count:
                await self._send(request, fobj, offset, count)
            await self.write_eof()
            return writer
        finally:
            await loop.run_in_executor(None, fobj.close)

    async def _send(self, request: web.BaseRequest, fobj: Any, offset: int, count: int) -> None:
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("Connection lost")
        try:
            await asyncio.get_running_loop().sendfile(transport, fobj, offset, count)
        except NotImplementedError:  # e.g. TLS transports: copy in chunks instead
            while count > 0:
                chunk = os.pread(fobj.fileno(), min(count, 256 * 1024), offset)
                if not chunk:
                    break
                await self.write(chunk)
                offset += len(chunk)
                count -= len(chunk)


def _if_range_matches(value: str, mtime: int | None, etag: str | None) -> bool:
    if value.startswith(('"', "W/")):
        return etag is not None and value == etag and not etag.startswith("W/")
    since = _parse_date(value)
    return since is not None and mtime is not None and mtime == int(since)
