"""The HTTP API: routing with the reference's rules, and one handler per endpoint.

Routing is done here rather than by aiohttp's router because the reference's
router (gorilla/mux) has observable rules clients see: non-canonical paths
are redirected to their cleaned form, every route also matches with the
trailing slash toggled and redirects, and unmatched paths get a bare 404
without CORS. Handlers take the current snapshot once and only read it.
"""

from __future__ import annotations

import logging
import posixpath
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote

from aiohttp import web

from eprd.catalog.filters import FilterError, IndexerObserver
from eprd.catalog.query import QueryError, parse_categories, parse_search
from eprd.catalog.snapshot import Body, Indexed, Snapshot
from eprd.http import piping
from eprd.http.registry import Registry
from eprd.http.responses import (
    CORS,
    cache_headers,
    headers_of,
    json_response,
    redirect,
    resource_response,
    text_error,
)
from eprd.indexers.base import TAR_GZ, ZIP, Failed, NotFound, Piped, Resource
from eprd.indexers.fallback import STALE_HEADERS, Reply, Unavailable
from eprd.model.versions import is_strict
from eprd.ops import accesslog

log = logging.getLogger("eprd.access")

R = TypeVar("R", bound=web.StreamResponse)
Handler = Callable[["Registry", web.BaseRequest, Snapshot, tuple[str, ...]], Awaitable[web.StreamResponse]]

# --- handlers -------------------------------------------------------------------------------


async def index(
    registry: Registry, request: web.BaseRequest, snap: Snapshot, args: tuple[str, ...]
) -> web.Response:
    return json_response(request, registry.index_body, registry.config.cache_time.index)


async def health(
    registry: Registry, request: web.BaseRequest, snap: Snapshot, args: tuple[str, ...]
) -> web.Response:
    ready_asked = request.rel_url.query.get("ready", "") in ("1", "t", "T", "TRUE", "true", "True")
    if ready_asked and not registry.is_ready():
        return web.Response(status=503)
    return web.Response()


async def favicon(
    registry: Registry, request: web.BaseRequest, snap: Snapshot, args: tuple[str, ...]
) -> web.Response:
    headers = headers_of(
        (("Content-Type", "image/x-icon"),), cache_headers(registry.config.cache_time.catch_all)
    )
    return web.Response(body=registry.favicon, headers=headers)


async def search(
    registry: Registry, request: web.BaseRequest, snap: Snapshot, args: tuple[str, ...]
) -> web.Response:
    try:
        raw = _raw_query(request)
        query = parse_search(raw, registry.allow_unknown_query_parameters)
        reply = await registry.fallback.search(snap, query, raw, _observer(registry))
    except QueryError as err:
        return text_error(400, str(err))
    except FilterError as err:
        return text_error(404, f"fetching package failed: {err}")
    except Unavailable:
        return text_error(500, "internal server error")
    return _reply(request, reply, registry.config.cache_time.search)


async def categories(
    registry: Registry, request: web.BaseRequest, snap: Snapshot, args: tuple[str, ...]
) -> web.Response:
    try:
        raw = _raw_query(request)
        query = parse_categories(raw, registry.allow_unknown_query_parameters)
        reply = await registry.fallback.categories(snap, query, raw, _observer(registry))
    except QueryError as err:
        return text_error(400, str(err))
    except FilterError as err:
        return text_error(404, str(err))
    except Unavailable:
        return text_error(500, "internal server error")
    return _reply(request, reply, registry.config.cache_time.categories)


def _observer(registry: Registry) -> IndexerObserver:
    """What times the indexers' part of a query (epr_indexer_get_duration_seconds), if anything."""
    return registry.metrics.observe_indexer if registry.metrics is not None else None


def _reply(request: web.BaseRequest, reply: Reply, seconds: float) -> web.Response:
    """A JSON answer; one built from a stale upstream answer says so."""
    response = json_response(request, reply.body, seconds)
    return _marked_stale(response) if reply.stale else response


def _marked_stale(response: R) -> R:
    """An answer that rests on an upstream answer older than its cache time says so."""
    for name, value in STALE_HEADERS:
        response.headers[name] = value
    return response


def _lookup(snap: Snapshot, name: str, version: str, not_found: str) -> Indexed | web.Response:
    """The package a URL names, or the reference's 400/404 answer."""
    if not is_strict(version):
        return text_error(400, "invalid package version")
    item = snap.lookup(name, version)
    return item if item is not None else text_error(404, not_found)


async def package_document(
    registry: Registry, request: web.BaseRequest, snap: Snapshot, args: tuple[str, ...]
) -> web.Response:
    name, version = args
    item = _lookup(snap, name, version, "package revision not found")
    if isinstance(item, web.Response):
        if item.status == 404:
            try:
                reply = await registry.fallback.package(name, version)
            except Unavailable:
                return text_error(500, "internal server error")
            if reply is not None:
                return _reply(request, reply, registry.config.cache_time.index)
        return item
    body = snap.cache.get_or_compute(("package", name, version), lambda: Body(item.document))
    return json_response(request, body, registry.config.cache_time.index)


async def static_file(
    registry: Registry, request: web.BaseRequest, snap: Snapshot, args: tuple[str, ...]
) -> web.StreamResponse:
    name, version, path = args
    item = await _find(registry, request, snap, name, version, "package revision not found", "statics", path)
    if not isinstance(item, Indexed):
        return item
    resource = await registry.indexers[item.source].static(item.package, path)
    if not isinstance(resource, NotFound | Failed):
        registry.storage_request("statics", _location(resource))  # metrics: counted once a file is served
    return await _respond(request, resource, cache_headers(registry.config.cache_time.catch_all))


async def artifact(
    registry: Registry, request: web.BaseRequest, snap: Snapshot, args: tuple[str, ...]
) -> web.StreamResponse:
    return await _download(registry, request, snap, args, ZIP)


async def artifact_tar(
    registry: Registry, request: web.BaseRequest, snap: Snapshot, args: tuple[str, ...]
) -> web.StreamResponse:
    return await _download(registry, request, snap, args, TAR_GZ)


async def _download(
    registry: Registry, request: web.BaseRequest, snap: Snapshot, args: tuple[str, ...], fmt: str
) -> web.StreamResponse:
    _, name, version = args
    # The reference's proxy mode knows only zips of remote packages.
    remote = "artifacts" if fmt == ZIP else None
    item = await _find(registry, request, snap, name, version, "artifact not found", remote)
    if not isinstance(item, Indexed):
        return item
    resource = await registry.indexers[item.source].artifact(item.package, fmt)
    registry.storage_request("artifacts", _location(resource))  # metrics: whatever the outcome
    cache = cache_headers(registry.config.cache_time.catch_all)
    return await _respond(request, resource, cache, missing="artifact not found")


async def signature(
    registry: Registry, request: web.BaseRequest, snap: Snapshot, args: tuple[str, ...]
) -> web.StreamResponse:
    _, name, version = args
    item = await _find(registry, request, snap, name, version, "signature file not found", "signatures")
    if not isinstance(item, Indexed):
        return item
    resource = await registry.indexers[item.source].signature(item.package)
    registry.storage_request("signatures", _location(resource))  # metrics: whatever the outcome
    cache = cache_headers(registry.config.cache_time.catch_all)
    return await _respond(request, resource, cache, missing="signature file not found")


async def _find(
    registry: Registry,
    request: web.BaseRequest,
    snap: Snapshot,
    name: str,
    version: str,
    not_found: str,
    remote: str | None,
    path: str = "",
) -> Indexed | web.StreamResponse:
    """The package a file URL names, or the answer instead: 400, or for a package not found
    locally the fallback's ``remote`` kind of file (§8), or 404."""
    item = _lookup(snap, name, version, not_found)
    if isinstance(item, web.Response) and item.status == 404 and remote:
        return await _remote_file(registry, request, item, name, version, remote, path)
    return item


def _location(resource: Resource) -> str:
    """The ``location`` label of epr_storage_requests_total: remote for what storage pipes."""
    return "remote" if isinstance(resource, Piped) else "local"


async def _respond(
    request: web.BaseRequest,
    resource: Resource,
    cache: tuple[tuple[str, str], ...],
    missing: str = "resource not found",
) -> web.StreamResponse:
    """The response for an indexer's resource: piped from storage, or built here."""
    if isinstance(resource, Piped):
        return await piping.pipe(request, resource.url, cache)
    return resource_response(request, resource, cache, missing=missing)


async def _remote_file(
    registry: Registry,
    request: web.BaseRequest,
    not_found: web.Response,
    name: str,
    version: str,
    kind: str,
    path: str = "",
) -> web.StreamResponse:
    """A file of a package not found locally, from the fallback (§8).

    In proxy mode the reference's answer: 301 to the upstream URL with public cache headers (or,
    with -proxy-cache-artifacts, the file itself), the local 404 when the upstream has no such
    package, 500 when it cannot be asked.
    """
    try:
        served = await registry.fallback.resource(name, version, kind, path)
    except Unavailable:
        return text_error(500, "internal server error")
    if served is None:
        return not_found
    cache = cache_headers(registry.config.cache_time.catch_all)
    response = resource_response(request, served.resource, cache)
    return _marked_stale(response) if served.stale else response


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
    return quote(path, safe="$&+,/:;=@", errors="surrogateescape")


def _raw_query(request: web.BaseRequest) -> str:
    return request.raw_path.partition("?")[2]


def _with_query(location: str, request: web.BaseRequest) -> str:
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


def make_dispatcher(
    registry: Registry, ui: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]] | None = None
) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """The single aiohttp handler behind every path; ``ui`` serves /ui and /ui/... (-ui)."""
    accesslog.quiet_client_errors()  # a malformed request is the client's error, not a traceback

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        started = time.monotonic()
        path = request.path
        if path == "*" and request.method == "OPTIONS":
            # Go's server answers "OPTIONS *" itself, before any handler (or log line) sees it.
            return web.Response(headers={"Content-Length": "0"})
        route: Route | None = None
        cleaned = clean_path(path) if ("//" in path or "/." in path or not path.startswith("/")) else path
        if cleaned != path:
            response: web.StreamResponse = web.Response(
                status=301, headers={"Location": _with_query(escape_path(cleaned), request)}
            )
        else:
            found = match(path)
            if found is None:
                # Tried only once no reference route matched, so they pay nothing for it.
                if ui is not None and (path == "/ui" or path.startswith("/ui/")):
                    response = await ui(request)
                else:
                    response = text_error(404, "404 page not found")
            else:
                route, args = found
                if route.trailing_slash != path.endswith("/"):
                    target = path + "/" if route.trailing_slash else path[:-1]
                    response = redirect(_with_query(escape_path(target), request), request.method)
                else:
                    response = await _handle(route, registry, request, args)
                if CORS[0] not in response.headers:
                    response.headers[CORS[0]] = CORS[1]
        registry.observe(request, route.template if route is not None else None, response, started)
        return response

    return dispatch


async def _handle(
    route: Route, registry: Registry, request: web.BaseRequest, args: tuple[str, ...]
) -> web.StreamResponse:
    """The route's handler; a bug in it is logged and answered as the reference answers one.

    The handlers and indexers turn every failure a request or a package can cause into a 4xx;
    this is the net below them, so an unforeseen exception still leaves one log line with
    its traceback and the connection usable, instead of aiohttp's own 500 page.
    """
    try:
        return await route.handler(registry, request, registry.snapshot, args)
    except web.HTTPException:
        raise
    except Exception as err:
        log.error(
            "request failed",
            exc_info=err,
            extra={"url.path": accesslog.safe_text(request.path), "error.type": type(err).__name__},
        )
        return text_error(500, "internal server error", ())
