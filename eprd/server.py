"""The running registry: its state, the aiohttp application and the listeners."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from eprd import API_VERSION, gojson
from eprd.accesslog import AccessLog
from eprd.archives import ArchiveStore
from eprd.config import Config
from eprd.routes import Route, make_dispatcher
from eprd.snapshot import Body, Snapshot

if TYPE_CHECKING:
    from eprd.watcher import Watcher

log = logging.getLogger("eprd.server")

T = TypeVar("T")


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
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="eprd-io")
        self.observers: list[Callable[[web.Request, Route | None, web.StreamResponse, float], None]] = []

    def is_ready(self) -> bool:
        return not self.shutting_down

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run file I/O off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def observe(
        self, request: web.Request, route: Route | None, response: web.StreamResponse, started: float
    ) -> None:
        """Called once per request after its handler: access log and metrics."""
        if self.access_log is not None and request.path != "/health":
            self.access_log.write(request, response, started, {})
        for observer in self.observers:
            observer(request, route, response, started)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def make_app(registry: Registry) -> web.Application:
    app = web.Application(client_max_size=1024)
    app.router.add_route("*", "/{tail:.*}", make_dispatcher(registry))
    return app


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
