"""Resources of storage packages: fetched from ``-storage-endpoint`` and streamed through.

As the reference's storage resolver does, the upstream status is passed through and only
``Content-Length``, ``Content-Type``, ``Last-Modified`` and ``Date`` are copied, with the
registry's public Cache-Control added. Unlike it, ``Range`` (and ``If-Range``) are
forwarded so that interrupted downloads resume, which makes ``Content-Range`` and
``Accept-Ranges`` part of the answer too. Bodies are streamed chunk by chunk
through one pooled client: a zip is never held whole in memory.

A ``file://`` endpoint (a local folder in the bucket layout) is served from disk.

Requests go through the shared upstream client (:mod:`eprd.upstream.client`): one pool,
retries until response headers arrive; :func:`use` hands it the process's instance.
"""

from __future__ import annotations

import logging
import os
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from eprd.http import httpfiles
from eprd.model.mediatypes import content_type_by_name, sniff
from eprd.upstream.client import Observer, Upstream, UpstreamError

log = logging.getLogger("eprd.storage")

# The reference's four, and the two a forwarded Range needs for the client to resume.
COPIED = ("Content-Length", "Content-Type", "Last-Modified", "Date", "Content-Range", "Accept-Ranges")
FORWARDED = ("Range", "If-Range")
CHUNK = 64 * 1024
CORS = ("Access-Control-Allow-Origin", "*")

_upstream: Upstream | None = None


def use(upstream: Upstream) -> None:
    """Pipe through ``upstream`` (the process's shared client) instead of a client of its own."""
    global _upstream
    _upstream = upstream


def observe(observer: Observer) -> None:
    """Measure and trace the piping's upstream calls (``eprd.upstream.observe.OpsObserver``)."""
    _client().observer = observer


def _client() -> Upstream:
    global _upstream
    if _upstream is None:
        # Waiting for headers is retried (connection errors, 429, 5xx but 501) within 30 s;
        # each read of a body may then wait 60 s.
        _upstream = Upstream(timeout=60.0, attempts=3, deadline=30.0, limit=256)
    return _upstream


async def close() -> None:
    """Close the client's pool (at shutdown)."""
    global _upstream
    if _upstream is not None:
        await _upstream.close()
    _upstream = None


def _text(status: int, message: str, cache: tuple[tuple[str, str], ...]) -> web.Response:
    headers: CIMultiDict[str] = CIMultiDict(cache)
    headers["Content-Type"] = "text/plain; charset=utf-8"
    headers["X-Content-Type-Options"] = "nosniff"
    headers[CORS[0]] = CORS[1]
    return web.Response(status=status, body=message.encode() + b"\n", headers=headers)


async def pipe(request: web.BaseRequest, url: str, cache: tuple[tuple[str, str], ...]) -> web.StreamResponse:
    """Stream ``url`` to the client with the reference's header rules."""
    if url.startswith("file://"):
        return _from_disk(unquote(urlsplit(url).path), cache)
    headers = {"Accept-Encoding": "identity"}
    for name in FORWARDED:
        if name in request.headers:
            headers[name] = request.headers[name]
    head = request.method == "HEAD"
    try:
        async with _client().stream(url, component="storage", headers=headers) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for name in COPIED:
                for value in upstream.headers.getall(name, ()):
                    response.headers.add(name, value)
            for name, value in cache:
                response.headers.add(name, value)
            response.headers[CORS[0]] = CORS[1]
            if "Content-Length" in response.headers:
                response.content_length = int(response.headers["Content-Length"])
            await response.prepare(request)
            if not head:
                try:
                    async for chunk in upstream.content.iter_chunked(CHUNK):
                        await response.write(chunk)
                except (aiohttp.ClientError, TimeoutError) as err:
                    # Headers are gone: the client sees a short body, as from the reference.
                    log.error("error reading from package-storage server: %s", err, extra={"url.full": url})
                    return response
            await response.write_eof()
            return response
    except UpstreamError as err:
        log.error("error from package-storage server: %s", err, extra={"url.full": url})
        return _text(500, "error from package-storage server", cache)


def _from_disk(path: str, cache: tuple[tuple[str, str], ...]) -> web.StreamResponse:
    if not os.path.isfile(path):
        headers: CIMultiDict[str] = CIMultiDict(cache)
        headers[CORS[0]] = CORS[1]
        return web.Response(status=404, headers=headers)
    content_type = content_type_by_name(path)
    if content_type is None:
        with open(path, "rb") as fh:
            content_type = sniff(fh.read(512))
    return httpfiles.DiskFileResponse(path, CIMultiDict(cache), content_type)
