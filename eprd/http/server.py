"""The aiohttp server around the dispatcher, and the listeners' helpers."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from eprd.http.registry import Registry
from eprd.http.routes import make_dispatcher

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
WORKER_HEADER = "X-Eprd-Worker"  # the pid of the worker that answered (only with -workers > 1)


class ApiServer(web.Server):
    """The API's aiohttp server: aiohttp's low-level server around the dispatcher.

    One catch-all route, no middleware and no per-response signal: an ``Application`` would
    only add its router, its middleware chain and its signals to every request (a quarter of
    the time of a small answer such as /categories). ``on_shutdown`` is run by
    :class:`ApiRunner` once the listener is closed, before requests in flight are waited for.
    """

    def __init__(self, handler: Handler, *, worker_pid: str | None = None, **kwargs: Any) -> None:
        super().__init__(handler, request_factory=self._request, access_log=None, **kwargs)
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []
        self._request_class = ApiRequest if worker_pid is None else _naming_worker(worker_pid)

    def _request(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        return self._request_class(message, payload, protocol, writer, task, self._loop, client_max_size=1024)


class ApiRequest(web.BaseRequest):
    """A request of the API: its response has no ``Server`` header, as the reference's Go server sends none.

    (aiohttp adds one naming itself and its version just before this hook.)
    """

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        response.headers.popall("Server", None)


def _naming_worker(pid: str) -> type[ApiRequest]:
    """Requests whose every response names the ``-workers`` worker that answered (its pid)."""

    class WorkerRequest(ApiRequest):
        async def _prepare_hook(self, response: web.StreamResponse) -> None:
            await super()._prepare_hook(response)
            response.headers[WORKER_HEADER] = pid

    return WorkerRequest


class ApiRunner(web.ServerRunner):
    """Runs an :class:`ApiServer`, and its ``on_shutdown`` callbacks when it stops."""

    def __init__(self, server: ApiServer, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self._api = server

    async def shutdown(self) -> None:
        for callback in self._api.on_shutdown:
            await callback()


def make_server(registry: Registry, worker_pid: str | None = None) -> ApiServer:
    """The API server of ``registry`` (``worker_pid``: a ``-workers`` worker's, sent in a header)."""
    on_shutdown: list[Callable[[], Awaitable[None]]] = []
    handler = make_dispatcher(registry, _catalog_page(registry, on_shutdown) if registry.ui else None)
    if registry.access_log is not None or registry.metrics is not None:
        handler = _sending(registry, handler)
    if registry.apm is not None:
        handler = registry.apm.trace(handler)
    server = ApiServer(handler, worker_pid=worker_pid)
    server.on_shutdown += on_shutdown
    return server


def _catalog_page(registry: Registry, on_shutdown: list[Callable[[], Awaitable[None]]]) -> Handler:
    """The handler of /ui (eprd.http.ui), made on the first request to it.

    Jinja2 and Markdown are imported then rather than while eprd starts (about 0.1 s of a
    1.4 s start from a baked index on the benchmark machine).
    """
    made: list[Any] = []

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if not made:
            from eprd.http.ui import CatalogUI

            made.append(CatalogUI(registry))
        return await made[0].handle(request)

    async def closing() -> None:
        if made:
            made[0].live.close()  # end the event streams first, so open pages do not hold up shutdown

    on_shutdown.append(closing)
    return handle


def _sending(registry: Registry, handler: Handler) -> Handler:
    """Send each response within the handler call, then report it (``Registry.sent``).

    The access log and metrics then see the whole exchange, as the reference's do: the
    bytes and time of a download, not only of its handler; ``epr_in_flight_requests``
    counts it until its last byte. aiohttp's own prepare and write_eof that follow do
    nothing for a response already sent; a client that left is left to aiohttp as before.
    """
    pending: dict[int, tuple[str | None, float, dict[str, Any]]] = {}
    registry._sending = pending
    http = registry.metrics.http if registry.metrics is not None else None  # epr_in_flight_requests

    async def send(request: web.BaseRequest) -> web.StreamResponse:
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
