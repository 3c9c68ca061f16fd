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
    return web.Response(status=status, body=_text_bytes(message) + b"\n", headers=_error_headers(cache))


@functools.lru_cache(maxsize=64)
def _error_headers(cache: tuple[tuple[str, str], ...]) -> CIMultiDict[str]:
    """The headers of a text error, made once per cache policy (aiohttp copies them cheaply)."""
    return headers_of(
        cache, (("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"))
    )


def _text_bytes(message: str) -> bytes:
    """A message as bytes; one quoting a client's bytes that are not UTF-8 gets them back as sent.

    Query values are decoded with surrogate escapes (eprd.catalog.query), so an error
    about ``kibana.version=%ff`` carries the byte 0xff, as the reference's does.
    """
    try:
        return message.encode()
    except UnicodeEncodeError:
        try:
            return message.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return message.encode("utf-8", "replace")


def json_response(request: web.BaseRequest, body: Body, seconds: float) -> web.Response:
    """A JSON body with a strong ETag, gzip when the client accepts it, 304 when it is unchanged."""
    use_gzip = _accepts_gzip(request.headers.get("Accept-Encoding", ""))
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and _etag_listed(if_none_match, (body.etag, body.gzip_etag)):
        return web.Response(status=304, headers=_json_headers(body, seconds, use_gzip, modified=False))
    headers = _json_headers(body, seconds, use_gzip)
    return web.Response(body=body.gzipped() if use_gzip else body.data, headers=headers)


def _json_headers(body: Body, seconds: float, use_gzip: bool, modified: bool = True) -> CIMultiDict[str]:
    """The headers of a JSON answer, made once per body and variant.

    aiohttp copies a multidict it is given cheaply, so a ready one per body saves building
    the header set (and hashing its names) on every request.
    """
    key = (seconds, use_gzip, modified)
    headers = body.headers.get(key)
    if headers is None:
        etag = body.gzip_etag if use_gzip else body.etag
        common = (*cache_headers(seconds), ("ETag", etag), ("Vary", "Accept-Encoding"), CORS)
        if not modified:
            headers = CIMultiDict(common)
        elif use_gzip:
            headers = CIMultiDict((*common, _JSON, ("Content-Encoding", "gzip")))
        else:
            headers = CIMultiDict((*common, _JSON))
        body.headers[key] = headers
    return headers


_JSON = ("Content-Type", "application/json")


@functools.lru_cache(maxsize=256)
def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value allows gzip (memoised: clients send few distinct values)."""
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
    request: web.BaseRequest,
    resource: Resource,
    cache: tuple[tuple[str, str], ...],
    missing: str = "resource not found",
) -> web.StreamResponse:
    """The response for what an indexer gave for a package file, with ``cache`` headers.

    ``missing`` is the endpoint's 404 text, for a file on disk gone by the time it is sent.
    """
    if isinstance(resource, DiskFile):
        return httpfiles.DiskFileResponse(
            resource.path, headers_of(cache), resource.content_type, missing, file=resource.opened
        )
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
        log.error(
            "cannot serve package file: %s",
            resource.reason,
            exc_info=resource.error,
            extra={"error.message": resource.reason},
        )
        # A 4xx for a package that cannot be served now is not cached: the package may be fixed.
        return text_error(resource.status, resource.message, cache if resource.status >= 500 else NO_CACHE)
    raise TypeError(f"no response for {resource!r}")  # Piped: served by the upstream client
