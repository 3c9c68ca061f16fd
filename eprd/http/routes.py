"""The HTTP API: routing with the reference's rules, and one handler per endpoint.

Routing is done here rather than by aiohttp's router because the reference's
router (gorilla/mux) has observable rules clients see: non-canonical paths
are redirected to their cleaned form, every route also matches with the
trailing slash toggled and redirects, and unmatched paths get a bare 404
without CORS. Handlers take the current snapshot once and only read it.
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web
from multidict import CIMultiDict

from eprd.catalog.filters import FilterError, categories_body, search_body
from eprd.catalog.query import QueryError, parse_categories, parse_search
from eprd.catalog.snapshot import Body, Indexed, Snapshot
from eprd.http import httpfiles, piping
from eprd.indexers.local import archives
from eprd.model.files import DirFiles
from eprd.model.versions import is_strict

if TYPE_CHECKING:
    from eprd.http.server import Registry

log = logging.getLogger("eprd.access")

Handler = Callable[["Registry", web.Request, Snapshot, tuple[str, ...]], Awaitable[web.StreamResponse]]

CORS = ("Access-Control-Allow-Origin", "*")
NO_CACHE = (("Cache-Control", "max-age=0"), ("Cache-Control", "private, no-store"))


@functools.lru_cache(maxsize=64)
def cache_headers(seconds: float) -> tuple[tuple[str, str], ...]:
    """The reference's two Cache-Control lines for a public response cached ``seconds``."""
    return (("Cache-Control", f"max-age={seconds:.0f}"), ("Cache-Control", "public"))


def _headers(*groups: tuple[tuple[str, str], ...]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for group in groups:
        for name, value in group:
            out.add(name, value)
    return out


def text_error(status: int, message: str, cache: tuple[tuple[str, str], ...] = NO_CACHE) -> web.Response:
    """Go's http.Error: plain text, nosniff, message and a newline."""
    headers = _headers(
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


# --- handlers -------------------------------------------------------------------------------


async def index(
    registry: Registry, request: web.Request, snap: Snapshot, args: tuple[str, ...]
) -> web.Response:
    return json_response(request, registry.index_body, registry.config.cache_time.index)


async def health(
    registry: Registry, request: web.Request, snap: Snapshot, args: tuple[str, ...]
) -> web.Response:
    ready_asked = request.rel_url.query.get("ready", "") in ("1", "t", "T", "TRUE", "true", "True")
    if ready_asked and not registry.is_ready():
        return web.Response(status=503)
    return web.Response()


async def favicon(
    registry: Registry, request: web.Request, snap: Snapshot, args: tuple[str, ...]
) -> web.Response:
    headers = _headers(
        (("Content-Type", "image/x-icon"),), cache_headers(registry.config.cache_time.catch_all)
    )
    return web.Response(body=registry.favicon, headers=headers)


async def search(
    registry: Registry, request: web.Request, snap: Snapshot, args: tuple[str, ...]
) -> web.Response:
    try:
        query = parse_search(_raw_query(request), registry.allow_unknown_query_parameters)
        observe = registry.metrics.observe_indexer if registry.metrics is not None else None
        body = snap.cache.get_or_compute(("search", query), lambda: Body(search_body(snap, query, observe)))
    except QueryError as err:
        return text_error(400, str(err))
    except FilterError as err:
        return text_error(404, f"fetching package failed: {err}")
    return json_response(request, body, registry.config.cache_time.search)


async def categories(
    registry: Registry, request: web.Request, snap: Snapshot, args: tuple[str, ...]
) -> web.Response:
    try:
        query = parse_categories(_raw_query(request), registry.allow_unknown_query_parameters)
        observe = registry.metrics.observe_indexer if registry.metrics is not None else None
        body = snap.cache.get_or_compute(
            ("categories", query), lambda: Body(categories_body(snap, query, observe))
        )
    except QueryError as err:
        return text_error(400, str(err))
    except FilterError as err:
        return text_error(404, str(err))
    return json_response(request, body, registry.config.cache_time.categories)


def _lookup(snap: Snapshot, name: str, version: str, not_found: str) -> Indexed | web.Response:
    """The package a URL names, or the reference's 400/404 answer."""
    if not is_strict(version):
        return text_error(400, "invalid package version")
    item = snap.lookup(name, version)
    return item if item is not None else text_error(404, not_found)


async def package_document(
    registry: Registry, request: web.Request, snap: Snapshot, args: tuple[str, ...]
) -> web.Response:
    name, version = args
    item = _lookup(snap, name, version, "package revision not found")
    if isinstance(item, web.Response):
        return item
    body = snap.cache.get_or_compute(("package", name, version), lambda: Body(item.document))
    return json_response(request, body, registry.config.cache_time.index)


async def static_file(
    registry: Registry, request: web.Request, snap: Snapshot, args: tuple[str, ...]
) -> web.StreamResponse:
    name, version, path = args
    item = _lookup(snap, name, version, "package revision not found")
    if isinstance(item, web.Response):
        return item
    cache = cache_headers(registry.config.cache_time.catch_all)
    files = item.package.files
    if files is None:  # a storage package
        return await piping.respond(registry, request, item.package, "statics", path, cache)
    if isinstance(files, DirFiles):
        real = files.resolve(path)
        if real is None:
            return text_error(404, "resource not found", cache)
        registry.storage_request("statics")  # metrics: counted once a file is served
        return httpfiles.DiskFileResponse(real, _headers(cache), _disk_content_type(real))
    info = files.info(path)
    if info is None:
        return text_error(404, "resource not found", cache)
    try:
        body = await registry.run_blocking(files.read, path)
    except OSError:
        log.exception("cannot read package file", extra={"file.path": f"{files.location}:{path}"})
        return text_error(500, "internal server error", cache)
    registry.storage_request("statics")  # metrics: counted once a file is served
    return httpfiles.bytes_response(
        request,
        body,
        headers=_headers(cache),
        content_type_value=httpfiles.content_type(path, body[:512]),
        mtime=info.mtime,
        etag=f'"{info.crc:08x}-{info.size:x}-{int(info.mtime):x}"',
    )


def _disk_content_type(path: str) -> str:
    known = httpfiles.content_type_by_name(path)
    if known is not None:
        return known
    with open(path, "rb") as fh:
        return httpfiles.sniff(fh.read(512))


async def artifact(
    registry: Registry, request: web.Request, snap: Snapshot, args: tuple[str, ...]
) -> web.StreamResponse:
    return await _archive(registry, request, snap, args, archives.ZIP, "application/zip")


async def artifact_tar(
    registry: Registry, request: web.Request, snap: Snapshot, args: tuple[str, ...]
) -> web.StreamResponse:
    return await _archive(registry, request, snap, args, archives.TAR_GZ, "application/gzip")


async def _archive(
    registry: Registry, request: web.Request, snap: Snapshot, args: tuple[str, ...], fmt: str, ctype: str
) -> web.StreamResponse:
    _, name, version = args
    item = _lookup(snap, name, version, "artifact not found")
    if isinstance(item, web.Response):
        return item
    cache = cache_headers(registry.config.cache_time.catch_all)
    if item.package.files is None:  # a storage package
        return await piping.respond(registry, request, item.package, "artifacts", fmt, cache)
    registry.storage_request("artifacts")  # metrics: counted whatever the outcome, as the reference
    try:
        path = await registry.archives.get(item.package, fmt)
    except OSError:
        log.exception("cannot build archive", extra={"file.path": item.package.location})
        return text_error(500, "internal server error", cache)
    return httpfiles.DiskFileResponse(path, _headers(cache), ctype)


async def signature(
    registry: Registry, request: web.Request, snap: Snapshot, args: tuple[str, ...]
) -> web.StreamResponse:
    _, name, version = args
    item = _lookup(snap, name, version, "signature file not found")
    if isinstance(item, web.Response):
        return item
    cache = cache_headers(registry.config.cache_time.catch_all)
    if item.package.files is None:  # a storage package
        return await piping.respond(registry, request, item.package, "signatures", "", cache)
    registry.storage_request("signatures")  # metrics: counted whatever the outcome, as the reference
    sig = item.package.signature
    if sig is None or not os.path.isfile(sig):
        return text_error(500, "internal server error", cache)
    return httpfiles.DiskFileResponse(sig, _headers(cache), httpfiles.content_type(sig))


# --- routing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    template: str  # the reference's route template, as metrics report it
    pattern: re.Pattern[str]
    trailing_slash: bool
    handler: Handler


def _route(template: str, regex: str, handler: Handler) -> Route:
    slash = template.endswith("/")
    return Route(template, re.compile(regex.rstrip("/") + "/?"), slash, handler)


_NAME = r"([a-z0-9_]+)"
_SEG = r"([^/]+)"
ROUTES: tuple[Route, ...] = (
    _route("/", r"/", index),
    _route("/index.json", r"/index\.json", index),
    _route("/search", r"/search", search),
    _route("/categories", r"/categories", categories),
    _route("/health", r"/health", health),
    _route("/favicon.ico", r"/favicon\.ico", favicon),
    _route(
        "/epr/{packageName}/{packageName:[a-z0-9_]+}-{packageVersion}.zip",
        rf"/epr/{_SEG}/{_NAME}-{_SEG}\.zip",
        artifact,
    ),
    _route(
        "/epr/{packageName}/{packageName:[a-z0-9_]+}-{packageVersion}.tar.gz",
        rf"/epr/{_SEG}/{_NAME}-{_SEG}\.tar\.gz",
        artifact_tar,
    ),
    _route(
        "/epr/{packageName}/{packageName:[a-z0-9_]+}-{packageVersion}.zip.sig",
        rf"/epr/{_SEG}/{_NAME}-{_SEG}\.zip\.sig",
        signature,
    ),
    _route(
        "/package/{packageName:[a-z0-9_]+}/{packageVersion}/", rf"/package/{_NAME}/{_SEG}/", package_document
    ),
    _route("/package/{packageName}/{packageVersion}/{name:.*}", rf"/package/{_SEG}/{_SEG}/(.*)", static_file),
)


def clean_path(path: str) -> str:
    """Go's path.Clean for request paths, keeping a trailing slash (gorilla/mux's cleanPath)."""
    if not path:
        return "/"
    if not path.startswith("/"):
        path = "/" + path
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def escape_path(path: str) -> str:
    """Go's URL path escaping (everything but unreserved characters and ``$&+,/:;=@``)."""
    return quote(path, safe="$&+,/:;=@")


def _raw_query(request: web.Request) -> str:
    return request.raw_path.partition("?")[2]


def _with_query(location: str, request: web.Request) -> str:
    query = _raw_query(request)
    return f"{location}?{query}" if query else location


# Routes without variables, looked up before trying the patterns in order.
_LITERAL = {route.template: route for route in ROUTES if "{" not in route.template}


def match(path: str) -> tuple[Route, tuple[str, ...]] | None:
    """The first route matching ``path`` (with the trailing slash toggled too) and its variables."""
    literal = _LITERAL.get(path)
    if literal is not None:
        return literal, ()
    for route in ROUTES:
        found = route.pattern.fullmatch(path)
        if found is not None:
            return route, found.groups()
    return None


def make_dispatcher(registry: Registry) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The single aiohttp handler behind every path."""

    async def dispatch(request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        path = request.path
        route: Route | None = None
        cleaned = clean_path(path) if ("//" in path or "/." in path or not path.startswith("/")) else path
        if cleaned != path:
            response: web.StreamResponse = web.Response(
                status=301, headers={"Location": _with_query(escape_path(cleaned), request)}
            )
        else:
            found = match(path)
            if found is None:
                response = text_error(404, "404 page not found")
            else:
                route, args = found
                if route.trailing_slash != path.endswith("/"):
                    target = path + "/" if route.trailing_slash else path[:-1]
                    response = _redirect(_with_query(escape_path(target), request), request.method)
                else:
                    response = await route.handler(registry, request, registry.snapshot, args)
                if CORS[0] not in response.headers:
                    response.headers[CORS[0]] = CORS[1]
        registry.observe(request, route, response, started)
        return response

    return dispatch


def _redirect(location: str, method: str) -> web.Response:
    """Go's http.Redirect with 301: a tiny HTML body for GET and HEAD."""
    headers = {"Location": location}
    if method in ("GET", "HEAD"):
        headers["Content-Type"] = "text/html; charset=utf-8"
        body = f'<a href="{_html_escape(location)}">Moved Permanently</a>.\n\n'.encode()
        return web.Response(status=301, body=body, headers=headers)
    return web.Response(status=301, headers=headers)


_HTML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;"})


def _html_escape(text: str) -> str:
    """Go's html.EscapeString (numeric entities for quotes)."""
    return text.translate(_HTML_ESCAPES)
