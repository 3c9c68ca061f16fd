"""Serving package files with HTTP file semantics.

Files on disk go through aiohttp's FileResponse (sendfile, Range, conditional
requests). Files inside zip archives are served from memory by
:func:`bytes_response`, which implements the same semantics as Go's
``http.ServeContent``: validators, If-* preconditions, single and multiple
ranges.
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import uuid
from collections.abc import Mapping
from datetime import UTC

from aiohttp import hdrs, web
from multidict import CIMultiDict

# Fixed by the reference regardless of the OS tables.
_OVERRIDES = {
    ".md": "text/markdown; charset=utf-8",
    ".yml": "text/yaml; charset=UTF-8",
    ".zip": "application/zip",
    ".ico": "image/x-icon",
}
# Go's built-in table, plus what the reference's image gets from mailcap for signatures.
_BUILTIN = {
    ".avif": "image/avif",
    ".css": "text/css; charset=utf-8",
    ".gif": "image/gif",
    ".htm": "text/html; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".jpeg": "image/jpeg",
    ".jpg": "image/jpeg",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".mjs": "text/javascript; charset=utf-8",
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".sig": "application/pgp-signature",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".webp": "image/webp",
    ".xml": "text/xml; charset=utf-8",
}
# Python's own table only, so the answer does not depend on the host's /etc/mime.types.
_PYTHON_TYPES = mimetypes.MimeTypes(filenames=())


def content_type_by_name(name: str) -> str | None:
    """The Content-Type for a file name's extension, None when the extension says nothing."""
    ext = os.path.splitext(name)[1].lower()
    if ext in _OVERRIDES:
        return _OVERRIDES[ext]
    if ext in _BUILTIN:
        return _BUILTIN[ext]
    guessed = _PYTHON_TYPES.types_map[True].get(ext)
    if guessed:
        return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed
    return None


def content_type(name: str, head: bytes = b"") -> str:
    """The Content-Type the reference sends for a file called ``name`` starting with ``head``."""
    return content_type_by_name(name) or sniff(head)


def sniff(head: bytes) -> str:
    """A much reduced http.DetectContentType: text unless the first bytes look binary."""
    sample = head[:512]
    if sample.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if sample.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if sample.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if sample.startswith(b"%PDF-"):
        return "application/pdf"
    if sample.startswith(b"PK\x03\x04"):
        return "application/zip"
    if any(b < 0x20 and b not in b"\t\n\x0c\r\x1b" for b in sample):
        return "application/octet-stream"
    return "text/plain; charset=utf-8"


def http_date(timestamp: float) -> str:
    return email.utils.formatdate(int(timestamp), usegmt=True)


def file_response(
    path: str, headers: Mapping[str, str] | CIMultiDict[str], content_type_value: str
) -> web.FileResponse:
    """A disk file with sendfile, Range, Last-Modified, ETag and conditional requests."""
    all_headers = CIMultiDict(headers)
    all_headers[hdrs.CONTENT_TYPE] = content_type_value
    return web.FileResponse(path, headers=all_headers)


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


def bytes_response(
    request: web.Request,
    body: bytes,
    *,
    headers: Mapping[str, str] | CIMultiDict[str],
    content_type_value: str,
    mtime: float = 0.0,
    etag: str | None = None,
) -> web.Response:
    """An in-memory file with the conditional and Range semantics of Go's ServeContent."""
    out = CIMultiDict(headers)
    seconds = int(mtime) if mtime > 0 else None
    if seconds:
        out[hdrs.LAST_MODIFIED] = http_date(seconds)
    if etag:
        out[hdrs.ETAG] = etag
    status = _precondition(request, seconds, etag)
    if status == 304:
        return web.Response(status=304, headers=out)
    if status == 412:
        return web.Response(status=412, headers=out)

    size = len(body)
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
            return web.Response(status=416, text="invalid range: failed to overlap", headers=out)
        if sum(length for _, length in ranges) <= size:
            return _partial(body, ranges, out, content_type_value)
    out[hdrs.CONTENT_TYPE] = content_type_value
    return web.Response(body=body, headers=out)


def _if_range_matches(value: str, mtime: int | None, etag: str | None) -> bool:
    if value.startswith(('"', "W/")):
        return etag is not None and value == etag and not etag.startswith("W/")
    since = _parse_date(value)
    return since is not None and mtime is not None and mtime == int(since)


def _partial(body: bytes, ranges: list[tuple[int, int]], out: CIMultiDict[str], ctype: str) -> web.Response:
    size = len(body)
    if len(ranges) == 1:
        start, length = ranges[0]
        out[hdrs.CONTENT_RANGE] = f"bytes {start}-{start + length - 1}/{size}"
        out[hdrs.CONTENT_TYPE] = ctype
        return web.Response(status=206, body=body[start : start + length], headers=out)
    boundary = uuid.uuid4().hex
    parts = []
    for start, length in ranges:
        parts.append(
            f"--{boundary}\r\nContent-Range: bytes {start}-{start + length - 1}/{size}\r\n"
            f"Content-Type: {ctype}\r\n\r\n".encode()
            + body[start : start + length]
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    out[hdrs.CONTENT_TYPE] = f"multipart/byteranges; boundary={boundary}"
    return web.Response(status=206, body=b"".join(parts), headers=out)
