"""Response builders: the reference's error texts, JSON bodies, redirects and package files."""

from __future__ import annotations

import functools
import logging

from aiohttp import web
from multidict import CIMultiDict

from eprd.catalog.snapshot import Body
from eprd.http import httpfiles
from eprd.indexers.base import DiskFile, Failed, MemoryFile, NotFound, Redirect, Resource

log = logging.getLogger("eprd.access")

CORS = ("Access-Control-Allow-Origin", "*")
NO_CACHE = (("Cache-Control", "max-age=0"), ("Cache-Control", "private, no-store"))


@functools.lru_cache(maxsize=64)
def cache_headers(seconds: float) -> tuple[tuple[str, str], ...]:
    """The reference's two Cache-Control lines for a public response cached ``seconds``."""
    return (("Cache-Control", f"max-age={seconds:.0f}"), ("Cache-Control", "public"))


def headers_of(*groups: tuple[tuple[str, str], ...]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for group in groups:
        for name, value in group:
            out.add(name, value)
    return out


def text_error(status: int, message: str, cache: tuple[tuple[str, str], ...] = NO_CACHE) -> web.Response:
    """Go's http.Error: plain text, nosniff, message and a newline."""
    headers = headers_of(
        cache, (("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"))
    )
    return web.Response(status=status, body=message.encode() + b"\n", headers=headers)


def json_response(request: web.Request, body: Body, seconds: float) -> web.Response:
    """A JSON body with a strong ETag, gzip when the client accepts it, 304 when it is unchanged."""
    use_gzip = _accepts_gzip(request.headers.get("Accept-Encoding", ""))
    etag = body.gzip_etag if use_gzip else body.etag
    common = (*cache_headers(seconds), ("ETag", etag), ("Vary", "Accept-Encoding"), CORS)
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and _etag_listed(if_none_match, (body.etag, body.gzip_etag)):
        return web.Response(status=304, headers=CIMultiDict(common))
    if use_gzip:
        headers = CIMultiDict((*common, _JSON, ("Content-Encoding", "gzip")))
        return web.Response(body=body.gzipped(), headers=headers)
    return web.Response(body=body.data, headers=CIMultiDict((*common, _JSON)))


_JSON = ("Content-Type", "application/json")


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _etag_listed(header: str, etags: tuple[str, ...]) -> bool:
    return any(tag.strip().removeprefix("W/") in etags or tag.strip() == "*" for tag in header.split(","))


def redirect(location: str, method: str, cache: tuple[tuple[str, str], ...] = ()) -> web.Response:
    """Go's http.Redirect with 301: a tiny HTML body for GET and HEAD."""
    headers = headers_of((("Location", location),), cache)
    if method in ("GET", "HEAD"):
        headers["Content-Type"] = "text/html; charset=utf-8"
        body = f'<a href="{_html_escape(location)}">Moved Permanently</a>.\n\n'.encode()
        return web.Response(status=301, body=body, headers=headers)
    return web.Response(status=301, headers=headers)


_HTML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"})


def _html_escape(text: str) -> str:
    """Go's html.EscapeString (numeric entities for quotes)."""
    return text.translate(_HTML_ESCAPES)


def resource_response(
    request: web.Request, resource: Resource, cache: tuple[tuple[str, str], ...]
) -> web.StreamResponse:
    """The response for what an indexer gave for a package file, with ``cache`` headers."""
    if isinstance(resource, DiskFile):
        return httpfiles.DiskFileResponse(resource.path, headers_of(cache), resource.content_type)
    if isinstance(resource, MemoryFile):
        return httpfiles.bytes_response(
            request,
            resource.body,
            headers=headers_of(cache),
            content_type_value=resource.content_type,
            mtime=resource.mtime,
            etag=resource.etag,
        )
    if isinstance(resource, NotFound):
        return text_error(404, resource.message, cache)
    if isinstance(resource, Redirect):
        return redirect(resource.url, request.method, cache)
    if isinstance(resource, Failed):
        log.error("cannot serve package file: %s", resource.reason, extra={"error.message": resource.reason})
        return text_error(resource.status, "internal server error", cache)
    raise TypeError(f"no response for {resource!r}")  # Piped: served by the upstream client
