"""Resources of storage packages: fetched from ``-storage-endpoint`` and streamed through.

As the reference's storage resolver does, the upstream status is passed through and only
``Content-Length``, ``Content-Type``, ``Last-Modified`` and ``Date`` are copied, with the
registry's public Cache-Control added. Unlike it, ``Range`` (and ``If-Range``) are
forwarded so that interrupted downloads resume, which makes ``Content-Range`` and
``Accept-Ranges`` part of the answer too. Bodies are streamed chunk by chunk
through one pooled client: a zip is never held whole in memory.

A ``file://`` endpoint (a local folder in the bucket layout) is served from disk.

All outgoing HTTP goes through :func:`fetch`, the one place to switch to the shared
upstream client (``eprd.upstream``) when it lands.
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

log = logging.getLogger("eprd.storage")

# The reference's four, and the two a forwarded Range needs for the client to resume.
COPIED = ("Content-Length", "Content-Type", "Last-Modified", "Date", "Content-Range", "Accept-Ranges")
FORWARDED = ("Range", "If-Range")
CHUNK = 64 * 1024
CORS = ("Access-Control-Allow-Origin", "*")

_session: aiohttp.ClientSession | None = None


def _client() -> aiohttp.ClientSession:
    global _session
    if _session is None or _session.closed:
        _session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
            connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
        )
    return _session


async def close() -> None:
    """Close the pooled client (at shutdown)."""
    global _session
    if _session is not None:
        await _session.close()
    _session = None


async def fetch(method: str, url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
    """Send one request upstream; the caller streams and releases the response."""
    return await _client().request(method, url, headers=headers, allow_redirects=True)


def _text(status: int, message: str, cache: tuple[tuple[str, str], ...]) -> web.Response:
    headers: CIMultiDict[str] = CIMultiDict(cache)
    headers["Content-Type"] = "text/plain; charset=utf-8"
    headers["X-Content-Type-Options"] = "nosniff"
    headers[CORS[0]] = CORS[1]
    return web.Response(status=status, body=message.encode() + b"\n", headers=headers)


async def pipe(request: web.Request, url: str, cache: tuple[tuple[str, str], ...]) -> web.StreamResponse:
    """Stream ``url`` to the client with the reference's header rules."""
    if url.startswith("file://"):
        return _from_disk(unquote(urlsplit(url).path), cache)
    headers = {"Accept-Encoding": "identity"}
    for name in FORWARDED:
        if name in request.headers:
            headers[name] = request.headers[name]
    method = "HEAD" if request.method == "HEAD" else "GET"
    try:
        upstream = await fetch(method, url, headers)
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        log.error("error from package-storage server: %s", err, extra={"url.full": url})
        return _text(500, "error from package-storage server", cache)
    try:
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
        if method != "HEAD":
            try:
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await response.write(chunk)
            except (aiohttp.ClientError, TimeoutError) as err:
                # Headers are gone: the client sees a short body, as from the reference.
                log.error("error reading from package-storage server: %s", err, extra={"url.full": url})
                upstream.close()
                return response
        await response.write_eof()
        return response
    finally:
        upstream.release()


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
