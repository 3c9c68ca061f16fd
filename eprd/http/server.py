"""The aiohttp application around the dispatcher, and the listeners' helpers."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from eprd.http.registry import Registry
from eprd.http.routes import make_dispatcher


def make_app(registry: Registry) -> web.Application:
    app = web.Application(client_max_size=1024)
    handler = make_dispatcher(registry, _catalog_page(registry, app) if registry.ui else None)
    if registry.access_log is not None or registry.metrics is not None:
        handler = _sending(registry, handler)
    # [\s\S], not ".": a decoded path may hold a line break (%0A), and must reach the dispatcher too.
    app.router.add_route("*", r"/{tail:[\s\S]*}", handler)
    if registry.apm is not None:
        registry.apm.install(app)  # the agent's tracing middleware
    return app


def _catalog_page(
    registry: Registry, app: web.Application
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The handler of /ui (eprd.http.ui), made on the first request to it.

    Jinja2 and Markdown are imported then rather than while eprd starts (about 0.1 s of a
    1.4 s start from a baked index on the benchmark machine).
    """
    made: list[Any] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        if not made:
            from eprd.http.ui import CatalogUI

            made.append(CatalogUI(registry))
        return await made[0].handle(request)

    async def closing(_: web.Application) -> None:
        if made:
            made[0].live.close()  # end the event streams first, so open pages do not hold up shutdown

    app.on_shutdown.append(closing)
    return handle


def _sending(
    registry: Registry, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Send each response within the handler call, then report it (``Registry.sent``).

    The access log and metrics then see the whole exchange, as the reference's do: the
    bytes and time of a download, not only of its handler; ``epr_in_flight_requests``
    counts it until its last byte. aiohttp's own prepare and write_eof that follow do
    nothing for a response already sent; a client that left is left to aiohttp as before.
    """
    pending: dict[int, tuple[str | None, float, dict[str, Any]]] = {}
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
