"""Serving package files with HTTP file semantics.

Files on disk are sent with the kernel's sendfile (:class:`DiskFileResponse`),
files inside zip archives from memory (:func:`bytes_response`); both follow
Go's ``http.ServeContent``: validators, If-* preconditions, single and
multiple ranges, and the headers each status keeps or drops.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from multidict import CIMultiDict

from eprd.http import conditional

log = logging.getLogger("eprd.access")  # request errors are logged where routes logs them


def http_date(timestamp: float) -> str:
    """An HTTP date (Go's TimeFormat) for Unix seconds."""
    return email.utils.formatdate(int(timestamp), usegmt=True)


@dataclass(slots=True)
class _Plan:
    """What to answer for a file: status, headers, and which byte ranges of it to send."""

    status: int
    headers: CIMultiDict[str]
    ranges: list[tuple[int, int]]  # (start, length); several make a multipart/byteranges body
    error: bytes = b""
    boundary: str = ""


def _plan(
    request: web.BaseRequest,
    size: int,
    mtime: float,
    etag: str | None,
    headers: Mapping[str, str] | CIMultiDict[str],
    content_type_value: str,
) -> _Plan:
    """Go's ServeContent decisions: validators, preconditions, ranges (eprd.http.conditional)."""
    out = CIMultiDict(headers)
    seconds = math.floor(mtime) if mtime else None  # Go compares modification times in whole seconds
    if seconds is not None:
        out[hdrs.LAST_MODIFIED] = http_date(seconds)
    if etag:
        out[hdrs.ETAG] = etag
    outcome, range_header = conditional.check_preconditions(request.method, request.headers, seconds, etag)
    if outcome is not conditional.Outcome.SEND:
        return _Plan(outcome.value, out, [])
    out[hdrs.ACCEPT_RANGES] = "bytes"
    try:
        ranges = conditional.parse_range(range_header, size)
    except conditional.RangeError as err:
        if not (err.no_overlap and size == 0):  # an empty file ignores a range it cannot overlap
            return _range_error(out, size, err)
        ranges = []
    if ranges and sum(length for _, length in ranges) <= size:  # else: ignored, as Go does
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


def _range_error(out: CIMultiDict[str], size: int, err: conditional.RangeError) -> _Plan:
    """Go's serveError for a 416: validators and caching dropped, plain text."""
    for name in (hdrs.CACHE_CONTROL, hdrs.CONTENT_ENCODING, hdrs.ETAG, hdrs.LAST_MODIFIED):
        out.popall(name, None)
    if err.no_overlap:
        out[hdrs.CONTENT_RANGE] = f"bytes */{size}"
    out[hdrs.CONTENT_TYPE] = "text/plain; charset=utf-8"
    out["X-Content-Type-Options"] = "nosniff"
    return _Plan(416, out, [], error=f"{err}\n".encode())


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
    request: web.BaseRequest,
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
    """A file on disk sent with sendfile, with the semantics of Go's ServeContent.

    A file that cannot be opened when the response is sent (removed or replaced since the
    handler found it) is answered 404 with ``missing`` as the text, and logged.
    """

    def __init__(
        self,
        path: str,
        headers: Mapping[str, str] | CIMultiDict[str],
        content_type_value: str,
        missing: str = "resource not found",
        *,
        file: BinaryIO | None = None,
    ) -> None:
        super().__init__()
        self._path = path
        # An already open file (of ``path``), sent and closed: a cache may delete the path meanwhile.
        self._file = file
        self._extra = CIMultiDict(headers)
        self._ctype = content_type_value
        self._missing = missing

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await super().prepare(request)
        loop = asyncio.get_running_loop()
        try:
            fobj = self._file or await loop.run_in_executor(None, open, self._path, "rb")
        except OSError as err:
            return await self._not_found(request, err)
        self._file = None
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

    async def _not_found(self, request: web.BaseRequest, err: OSError) -> AbstractStreamWriter | None:
        log.warning("cannot open file to send", extra={"file.path": self._path, "error.message": str(err)})
        self._extra.update(self.headers)
        self.set_status(404)
        self.headers.clear()
        self.headers.extend(self._extra)
        self.headers[hdrs.CONTENT_TYPE] = "text/plain; charset=utf-8"
        self.headers["X-Content-Type-Options"] = "nosniff"
        body = self._missing.encode() + b"\n"
        self.content_length = len(body)
        writer = await super().prepare(request)
        if request.method != "HEAD":
            await self.write(body)
        await self.write_eof()
        return writer

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
