"""Listening on a socket that several worker processes share (``-workers N``).

asyncio accepts every connection waiting in the queue each time a listening socket turns
readable (up to its backlog, 128 for aiohttp's sites). On a socket that all workers wait on,
the first worker to wake therefore takes a whole burst of new connections: wrk's 32 opening
connections all went to one worker in about one run of four, which then served them alone
while the other idled (``/categories`` at 31,000 instead of 41,000-50,000 requests/s). A
:class:`SharedSocketSite` accepts one connection per wake-up and goes back to its event loop, so
the workers share a burst, and a busy worker, slower to come back, takes fewer of them.

Per-worker ``SO_REUSEPORT`` sockets would spread connections by a hash of their addresses
instead, but a stuck or exiting worker's share of new connections would then wait in its own
queue; here the other workers keep accepting them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("eprd")

_PAUSE_S = 1.0  # asyncio's own pause when accepting fails for want of descriptors or memory


class SharedSocketSite(web.SockSite):
    """An aiohttp site on a listening socket shared with other processes, one accept per wake-up."""

    async def start(self) -> None:
        await web.BaseSite.start(self)  # (registers the site with its runner; SockSite's start would listen)
        server = self._runner.server
        assert server is not None
        self._server = _Acceptor(asyncio.get_running_loop(), self._sock, server, self._ssl_context)


class _Acceptor(asyncio.AbstractServer):
    """Accepts connections on ``sock`` one at a time and hands each to ``factory``'s protocol."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[], asyncio.BaseProtocol],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._loop = loop
        self._sock: socket.socket | None = sock
        self._factory = factory
        self._ssl = ssl_context
        self._handshakes: set[asyncio.Task[Any]] = set()  # (held: the loop keeps only weak references)
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        if self._sock is None:
            return
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker took it, or the client gave up first
        except OSError as err:
            # Out of descriptors or memory (or anything else that would repeat at once: the socket
            # stays readable): pause, as asyncio does for a shortage, rather than spin.
            log.error("cannot accept connections for %.0f s: %s", _PAUSE_S, err.strerror or err)
            self._loop.remove_reader(self._sock.fileno())
            self._loop.call_later(_PAUSE_S, self._resume)
            return
        conn.setblocking(False)
        task = self._loop.create_task(self._connect(conn))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    def _resume(self) -> None:
        if self._sock is not None:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn, ssl=self._ssl)
        except OSError:  # (SSL errors and timeouts are OSErrors too)
            conn.close()  # a client that left during the TLS handshake, or never finished it

    # --- asyncio.AbstractServer

    def close(self) -> None:
        """Stop accepting and close this process's descriptor of the shared socket."""
        if self._sock is None:
            return
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._sock is not None

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._sock is None else (self._sock,)

    async def start_serving(self) -> None:
        """Serving starts when the acceptor is made."""

    async def serve_forever(self) -> None:
        raise NotImplementedError("served by the worker's event loop")

    async def wait_closed(self) -> None:
        """Closing is immediate: connections belong to aiohttp's server, not to the acceptor."""
