"""The running registry: its state, the aiohttp application and the listeners."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from eprd import API_VERSION
from eprd.catalog.snapshot import Body, Snapshot
from eprd.config import Config
from eprd.http.routes import Route, make_dispatcher
from eprd.indexers.local.archives import ArchiveStore
from eprd.model import gojson
from eprd.ops.accesslog import AccessLog

if TYPE_CHECKING:
    from eprd.indexers.local.watcher import Watcher
    from eprd.indexers.storage.indexer import StorageIndexer
    from eprd.ops.apm import Apm
    from eprd.ops.metrics import Metrics

log = logging.getLogger("eprd.server")

T = TypeVar("T")

_NO_TRACE: dict[str, Any] = {}


def index_document() -> bytes:
    """The ``/`` body: the API level eprd speaks, named as the reference names itself."""
    name = os.environ.get("ELASTIC_APM_SERVICE_NAME") or "package-registry"
    return gojson.dumps({"service.name": name, "service.version": API_VERSION})


class Registry:
    """Everything the handlers share. ``snapshot`` is the one reference that changes."""

    def __init__(
        self,
        config: Config,
        snapshot: Snapshot,
        archives: ArchiveStore,
        allow_unknown_query_parameters: bool = True,
        favicon: bytes | None = None,
    ) -> None:
        self.config = config
        self.snapshot = snapshot
        self.archives = archives
        self.allow_unknown_query_parameters = allow_unknown_query_parameters
        self.index_body = Body(index_document())
        self.favicon = favicon or resources.files("eprd").joinpath("data/favicon.ico").read_bytes()
        self.shutting_down = False
        self.watcher: Watcher | None = None
        self.access_log: AccessLog | None = None
        self.metrics: Metrics | None = None  # -metrics-address (eprd.metrics); set before make_app
        self.apm: Apm | None = None  # ELASTIC_APM_SERVER_URL (eprd.apm)
        # -feature-storage-indexer: where storage packages' resources come from (eprd.http.piping)
        self.storage: StorageIndexer | None = None
        # More conditions for /health?ready=true (e.g. the storage index is loaded).
        self.readiness: list[Callable[[], bool]] = []
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="eprd-io")
        # id(request) -> (route, started, trace) from observe() to the make_app wrapper, which
        # reports requests once their responses are sent; None: reported from observe().
        self._sending: dict[int, tuple[Route | None, float, dict[str, Any]]] | None = None
        self.observers: list[Callable[[web.Request, Route | None, web.StreamResponse, float], None]] = []

    def is_ready(self) -> bool:
        return not self.shutting_down and all(check() for check in self.readiness)

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run file I/O off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def observe(
        self, request: web.Request, route: Route | None, response: web.StreamResponse, started: float
    ) -> None:
        """Called once per request after its handler, before its response is sent."""
        trace = _NO_TRACE
        if self.apm is not None:
            trace = self.apm.observe(request, route)  # names the transaction; its ids for the log line
        if self._sending is not None:
            self._sending[id(request)] = (route, started, trace)  # reported by sent()
        elif self.access_log is not None and request.path != "/health":
            self.access_log.write(request, response, started, trace)
        for observer in self.observers:
            observer(request, route, response, started)

    def sent(
        self,
        request: web.Request,
        response: web.StreamResponse,
        route: Route | None,
        started: float,
        trace: dict[str, Any],
    ) -> None:
        """Called once a response is sent: metrics (matched routes only) and the access log."""
        if self.metrics is not None and route is not None:
            self.metrics.record(request, route.template, response, time.monotonic() - started)
        if self.access_log is not None and request.path != "/health":
            self.access_log.write(request, response, started, trace)

    def storage_request(self, component: str) -> None:
        """A package resource served (epr_storage_requests_total): artifacts, statics or signatures."""
        if self.metrics is not None:
            self.metrics.storage_request(component)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def make_app(registry: Registry) -> web.Application:
    app = web.Application(client_max_size=1024)
    handler = make_dispatcher(registry)
    if registry.access_log is not None or registry.metrics is not None:
        handler = _sending(registry, handler)
    app.router.add_route("*", "/{tail:.*}", handler)
    if registry.apm is not None:
        registry.apm.install(app)  # the agent's tracing middleware
    return app


def _sending(
    registry: Registry, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Send each response within the handler call, then report it (``Registry.sent``).

    The access log and metrics then see the whole exchange, as the reference's do: the
    bytes and time of a download, not only of its handler; ``epr_in_flight_requests``
    counts it until its last byte. aiohttp's own prepare and write_eof that follow do
    nothing for a response already sent; a client that left is left to aiohttp as before.
    """
    pending: dict[int, tuple[Route | None, float, dict[str, Any]]] = {}
    registry._sending = pending
    http = registry.metrics.http if registry.metrics is not None else None  # epr_in_flight_requests

    async def send(request: web.Request) -> web.StreamResponse:
        if http is not None:
            http.in_flight += 1
        try:
            try:
                response = await handler(request)
            finally:
                observed = pending.pop(id(request), None)
            if observed is None:
                return response
            try:
                await response.prepare(request)
                await response.write_eof()
            except ConnectionError:
                pass
            finally:
                registry.sent(request, response, *observed)
            return response
        finally:
            if http is not None:
                http.in_flight -= 1

    return send


def split_address(address: str) -> tuple[str | None, int]:
    """Go's host:port: an empty host listens on every interface."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or None
    return host, int(port)


def tls_context(cert: str, key: str, min_version: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if min_version:
        context.minimum_version = {
            "1.1": ssl.TLSVersion.TLSv1_1,
            "1.2": ssl.TLSVersion.TLSv1_2,
            "1.3": ssl.TLSVersion.TLSv1_3,
        }[min_version]
    return context
